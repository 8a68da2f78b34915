/* Mutant: blocklock.pml with NO_ANNOUNCE -- a reader CASes its first hold without setting its line's ReaderLines bit (BlockLock.AnnounceLine left out), so a writer's AnyReaders does not look at its line. check.sh requires spin to FIND a violation. */
#define NO_ANNOUNCE
#include "../blocklock.pml"
