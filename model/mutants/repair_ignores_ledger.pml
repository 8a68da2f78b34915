/* Mutant: blocklock.pml with REPAIR_IGNORES_LEDGER (see FORGERY AND REPAIR in the header of ../blocklock.pml). check.sh requires spin to FIND a violation. */
#define REPAIR_IGNORES_LEDGER
#include "../blocklock.pml"
