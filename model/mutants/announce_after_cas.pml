/* Mutant: blocklock.pml with ANNOUNCE_AFTER_CAS -- a reader sets its line's ReaderLines bit after its CAS (before its step-3 re-check). check.sh requires spin to FIND a violation. */
#define ANNOUNCE_AFTER_CAS
#include "../blocklock.pml"
