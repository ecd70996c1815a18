/* bind_loopback.c: LD_PRELOAD shim for tests. A server that can only be
 * told a port (OpenSSL 3.0's "openssl ocsp -port" rejects host:port) binds
 * the wildcard address; this moves a wildcard bind to 127.0.0.1 (for an
 * IPv6 socket, the IPv4-mapped ::ffff:127.0.0.1, which takes the IPv4
 * connections a dual-stack wildcard would have), so nothing of a test
 * listens beyond this machine. Built and used by t/24_responders.t only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    struct sockaddr_storage copy;

    if (!real_bind)
        real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (sa && len <= sizeof(copy)) {
        memcpy(&copy, sa, len);
        if (sa->sa_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&copy;
            if (in->sin_addr.s_addr == htonl(INADDR_ANY))
                in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (struct sockaddr *)&copy, len);
        }
        if (sa->sa_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&copy;
            static const unsigned char mapped_lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                                        0xff, 0xff, 127, 0, 0, 1};
            if (!memcmp(&in6->sin6_addr, &in6addr_any, sizeof(in6addr_any)))
                memcpy(&in6->sin6_addr, mapped_lo, sizeof(mapped_lo));
            return real_bind(fd, (struct sockaddr *)&copy, len);
        }
    }
    return real_bind(fd, sa, len);
}
