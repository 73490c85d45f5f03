/* An LD_PRELOAD shim for the durability tests: fsync and fdatasync fail
 * with EIO on the descriptors the environment names, as a disk that cannot
 * make data durable does.
 *
 *   FAIL_SYNC_UNDER=text  descriptors whose path (/proc/self/fd) contains text
 *   FAIL_SYNC_EXACT=path  descriptors whose path is exactly path
 *   FAIL_SYNC_SKIP=n      let the first n matching calls through
 *
 * An unnamed file (O_TMPFILE) reads as "/dir/#123 (deleted)". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int doomed(int fd) {
    const char *needle = getenv("FAIL_SYNC_UNDER");
    const char *exact = getenv("FAIL_SYNC_EXACT");
    char link[64], path[4096];
    if (!needle && !exact) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = 0;
    int hit = exact ? strcmp(path, exact) == 0 : strstr(path, needle) != NULL;
    static int seen = 0;
    const char *skip = getenv("FAIL_SYNC_SKIP");
    if (hit && skip && __atomic_fetch_add(&seen, 1, __ATOMIC_SEQ_CST) < atoi(skip)) return 0;
    return hit;
}

int fsync(int fd) {
    if (doomed(fd)) { errno = EIO; return -1; }
    return ((int (*)(int))dlsym(RTLD_NEXT, "fsync"))(fd);
}

int fdatasync(int fd) {
    if (doomed(fd)) { errno = EIO; return -1; }
    return ((int (*)(int))dlsym(RTLD_NEXT, "fdatasync"))(fd);
}
