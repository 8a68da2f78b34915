using SharedStore.Cli;

// sharedstore: the operator's command for a SharedStore broker. See README.md ("The sharedstore command") for the
// subcommands and ExitCodes for what each exit code means.
return Cli.Run(args);
