/* no_io_uring PROGRAM ARGS...: runs PROGRAM with io_uring_setup failing with ENOSYS (a seccomp filter, inherited by
 * everything it starts). For the valgrind run of the C tests: valgrind 3.19 (Debian 12) does not let the thread
 * that sleeps in io_uring_enter(GETEVENTS) release its global lock, so the client library's io_uring completion
 * thread stops every other thread of the process (the first object_aread hangs for good). Without io_uring the client
 * library falls back to its thread-pool scheduler (DeviceSchedulers: "fell back to the thread pool"), which valgrind
 * runs fine; the plain run of the same tests covers the io_uring path. */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof filter / sizeof filter[0], filter};
    if (argc < 2) {
        fprintf(stderr, "usage: no_io_uring PROGRAM ARGS...\n");
        return 2;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("no_io_uring: seccomp");
        return 2;
    }
    execvp(argv[1], argv + 1);
    perror("no_io_uring: exec");
    return 127;
}
