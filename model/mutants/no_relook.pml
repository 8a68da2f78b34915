/* Mutant: blocklock.pml with NO_RELOOK -- RefreshWaiting clears the line's Waiting bit without looking at the line again afterwards. check.sh requires spin to FIND a violation. */
#define NO_RELOOK
#include "../blocklock.pml"
