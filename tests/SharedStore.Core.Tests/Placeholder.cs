namespace SharedStore.Core.Tests;
