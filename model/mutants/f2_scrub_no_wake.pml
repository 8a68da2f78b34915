/* Mutant: blocklock.pml with SCRUB_WAKE_ONLY_IF_ANY -- ScrubSlot wakes only when it released something (the F2 fix undone). check.sh requires spin to FIND a violation. */
#define SCRUB_WAKE_ONLY_IF_ANY
#define SCRUB_WAKE_IF_SLEEPERS
#include "../blocklock.pml"
