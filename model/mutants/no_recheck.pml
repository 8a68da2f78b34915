/* Mutant: blocklock.pml with NO_RECHECK (see the header of ../blocklock.pml). check.sh requires spin to FIND a violation. */
#define NO_RECHECK
#include "../blocklock.pml"
