global using NUnit.Framework;
global using SharedStore.Integration.Tests.Harness;
