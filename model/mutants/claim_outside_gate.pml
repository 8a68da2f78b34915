/* Mutant: blocklock.pml with CLAIM_OUTSIDE_GATE (see FORGERY AND REPAIR in the header of ../blocklock.pml). check.sh requires spin to FIND a violation. */
#define CLAIM_OUTSIDE_GATE
#include "../blocklock.pml"
