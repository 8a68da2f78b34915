/* Mutant: blocklock.pml with NO_REENTRANT_RECHECK -- re-entrant reads neither wait for nor re-check an active writer (the reader half of the F1 fix undone). check.sh requires spin to FIND a violation. */
#define NO_REENTRANT_RECHECK
#include "../blocklock.pml"
