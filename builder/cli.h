/* The kiln command line: parses arguments, runs a command, prints results and errors. */
#pragma once

/* Runs kiln with argv; returns the process exit status (0, 1 failure, 2 usage). */
int cli_main(int argc, char **argv);
