/* Mutant: blocklock.pml with JOIN_NO_SCRUB (see FORGERY AND REPAIR in the header of ../blocklock.pml). check.sh requires spin to FIND a violation. */
#define JOIN_NO_SCRUB
#include "../blocklock.pml"
