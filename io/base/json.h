/* io/base/json.h — the one strict JSON reader.
 *
 * Every JSON text slicepipe reads goes through sp_json_parse: safetensors
 * headers and index files, config.json, tokenizer.json,
 * tokenizer_config.json, and each line of a .jsonl text. cJSON builds the
 * tree; before it does, the text is validated here, because cJSON is lenient
 * (trailing garbage, control characters in strings, malformed numbers, lone
 * surrogates, duplicate keys that cJSON_GetObjectItem resolves to the first):
 *
 *   - the text is well-formed UTF-8 (io/base/utf8.h);
 *   - it is exactly one RFC 8259 value, JSON whitespace around it allowed
 *     (none with SP_JSON_BARE), nothing else before or after: a second
 *     object on one line is "trailing garbage";
 *   - strings hold no raw control character and no lone surrogate escape;
 *     "\u0000" is refused, except in string values with SP_JSON_NUL_OK (a
 *     .jsonl document may hold NUL), never in a key;
 *   - nesting is at most SP_JSON_DEPTH_MAX deep;
 *   - in every object, no two keys are equal, compared as cJSON unescapes
 *     them ("te\u0078t" is "text"): a duplicate is 65 naming the key and
 *     where it is.
 * Every refusal is 65 with one message "<path>: <what> ...". A tree that
 * passes is read with cJSON's own accessors.
 */
#ifndef SP_JSON_H
#define SP_JSON_H

#include <stdint.h>

struct cJSON;

#define SP_JSON_DEPTH_MAX 64

enum {
    SP_JSON_BARE = 1,   /* no whitespace before or after the value */
    SP_JSON_NUL_OK = 2, /* string values may hold "\u0000"; their length is sp_json_strlen */
};

/* Parses buf[0..len) (no terminating NUL needed) into *out (cJSON_Delete it).
 * path names the file in messages; what (NULL: nothing) the part of it, as
 * "header" or "line 12". On failure *out is NULL and the status is 65 (70 out
 * of memory). */
int sp_json_parse(const char *path, const char *what, const char *buf, int64_t len, int flags, struct cJSON **out);

/* The byte length of string node v: with SP_JSON_NUL_OK a "\u0000" is a NUL
 * byte inside valuestring, which strlen would stop at. */
int64_t sp_json_strlen(const struct cJSON *v);

#endif
