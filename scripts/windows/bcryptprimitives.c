/*
 * bcryptprimitives.dll for Wine versions that lack it (Debian's Wine 8).
 *
 * Rust's standard library on Windows imports ProcessPrng from this DLL, so
 * without it mpw.exe does not start under such a Wine. Placed next to mpw.exe
 * it is found before the system one. ProcessPrng is served by advapi32's
 * RtlGenRandom (exported as SystemFunction036). Only the Wine runs in CI use
 * it (scripts/windows_e2e.py); see README.md, Windows.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll \
 *        bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T size)
{
    /* RtlGenRandom takes a ULONG length: feed larger requests in pieces. */
    while (size > 0) {
        ULONG chunk = size > 0x40000000 ? 0x40000000 : (ULONG)size;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        size -= chunk;
    }
    return TRUE;
}
