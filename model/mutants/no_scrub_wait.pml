/* Mutant: blocklock.pml with NO_SCRUB_WAIT (see the header of ../blocklock.pml). check.sh requires spin to FIND a violation. */
#define NO_SCRUB_WAIT
#include "../blocklock.pml"
