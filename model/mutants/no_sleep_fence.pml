/* Mutant: blocklock.pml with NO_SLEEP_FENCE (see the header of ../blocklock.pml). check.sh requires spin to FIND a violation. */
#define NO_SLEEP_FENCE
#include "../blocklock.pml"
