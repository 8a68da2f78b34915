using System.Runtime.Versioning;

// The device library is Linux-only; so are its tests.
[assembly: SupportedOSPlatform("linux")]
