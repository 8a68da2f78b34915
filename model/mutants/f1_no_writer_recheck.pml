/* Mutant: blocklock.pml with NO_WRITER_RECHECK -- the writer goes active without re-reading the readers (the writer half of the F1 fix undone). check.sh requires spin to FIND a violation. */
#define NO_WRITER_RECHECK
#include "../blocklock.pml"
