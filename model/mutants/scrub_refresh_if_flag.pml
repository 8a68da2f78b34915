/* Mutant: blocklock.pml with SCRUB_REFRESH_IF_FLAG -- ScrubSlot refreshes the dead slot's line only when the dead slot's wait flag was set. check.sh requires spin to FIND a violation. */
#define SCRUB_REFRESH_IF_FLAG
#include "../blocklock.pml"
