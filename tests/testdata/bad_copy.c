/* An LD_PRELOAD shim for the durability tests: copy_file_range copies, then
 * flips every bit of the first byte it wrote, as a kernel or filesystem
 * that copies wrongly would (the caller sees a whole, successful copy).
 *
 *   BAD_COPY=1  flip; unset, the real call alone */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

ssize_t copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len, unsigned int flags) {
    ssize_t (*real)(int, off_t *, int, off_t *, size_t, unsigned int) =
        (ssize_t (*)(int, off_t *, int, off_t *, size_t, unsigned int))dlsym(RTLD_NEXT, "copy_file_range");
    ssize_t n = real(fd_in, off_in, fd_out, off_out, len, flags);
    if (n > 0 && getenv("BAD_COPY")) {
        off_t end = off_out ? *off_out : lseek(fd_out, 0, SEEK_CUR);
        unsigned char b;
        if (pread(fd_out, &b, 1, end - n) == 1) {
            b = (unsigned char)~b;
            if (pwrite(fd_out, &b, 1, end - n) != 1) return -1;
        }
    }
    return n;
}
