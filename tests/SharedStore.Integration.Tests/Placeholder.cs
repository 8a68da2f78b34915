namespace SharedStore.Integration.Tests;
