/* Mutant: blocklock.pml with REPAIR_NO_GATE (see FORGERY AND REPAIR in the header of ../blocklock.pml). check.sh requires spin to FIND a violation. */
#define REPAIR_NO_GATE
#include "../blocklock.pml"
