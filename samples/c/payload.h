/* The sample payload, byte for byte the C# sample's (samples/ReaderWriter/Program.cs, class Payload):
 *   bytes 0-7   magic "SSSAMPLE" (the little-endian u64 0x454C504D41535353): the writer has written it
 *   bytes 8-15  checksum of bytes 16.. (little-endian u64)
 *   bytes 16..  data
 * Checksum: a 64-bit multiply-xorshift hash over the data's little-endian 8-byte words, then its tail bytes. */
#ifndef SAMPLE_PAYLOAD_H
#define SAMPLE_PAYLOAD_H

#include <stdint.h>
#include <string.h>

#define PAYLOAD_HEADER_BYTES 16
#define PAYLOAD_MAGIC 0x454C504D41535353ULL

static inline uint64_t payload_checksum(const unsigned char *data, size_t len)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)len;
    size_t words = len / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w;
        memcpy(&w, data + 8 * i, 8); /* x86-64 is little-endian, as C#'s MemoryMarshal.Cast reads */
        h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 31;
    }
    for (size_t i = words * 8; i < len; i++)
        h = (h ^ data[i]) * 0x94D049BB133111EBULL;
    return h;
}

/* Fills buf[0..size) with a payload: pseudo-random data (splitmix64 from `seed`), then the header. */
static inline void payload_make(unsigned char *buf, size_t size, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = PAYLOAD_HEADER_BYTES; i < size; i += 8) {
        uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        size_t n = size - i < 8 ? size - i : 8;
        memcpy(buf + i, &z, n);
    }
    uint64_t magic = PAYLOAD_MAGIC;
    uint64_t sum = payload_checksum(buf + PAYLOAD_HEADER_BYTES, size - PAYLOAD_HEADER_BYTES);
    memcpy(buf, &magic, 8);
    memcpy(buf + 8, &sum, 8);
}

static inline int payload_is_written(const unsigned char *data)
{
    uint64_t magic;
    memcpy(&magic, data, 8);
    return magic == PAYLOAD_MAGIC;
}

/* 1 when the checksum in the header matches the data; *expected and *actual receive both. */
static inline int payload_verify(const unsigned char *data, size_t size, uint64_t *expected, uint64_t *actual)
{
    memcpy(expected, data + 8, 8);
    *actual = payload_checksum(data + PAYLOAD_HEADER_BYTES, size - PAYLOAD_HEADER_BYTES);
    return *expected == *actual;
}

#endif
