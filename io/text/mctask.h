/* io/text/mctask.h — multiple-choice task files for zero-shot scoring
 * (`slicepipe eval --task`, pipeline/model/zeroshot.h).
 *
 * Two formats, told apart by the name (".jsonl" / ".txt"), else by the first
 * non-blank byte ('{' is JSONL):
 *
 *   JSONL   one item a line, read by the one strict JSON reader (io/base/json.h):
 *             {"context": str, "choices": [str, ...], "gold": int,
 *              "target_delimiter": str}      (the last optional, default " ")
 *           Other keys are ignored (an id, a source). Blank lines are skipped.
 *   HellaSwag text (llama.cpp's `perplexity --hellaswag` format): 6 lines a
 *           task: the context, the gold index 0..3, the 4 endings. lm-eval's
 *           HellaSwag preprocessing is applied to the context and to each
 *           ending (sp_mctask_hellaswag_pre); the delimiter is " ".
 *
 * Refused (65), one message "<file>:<line>: <reason>": invalid UTF-8 or JSON,
 * a missing or mistyped field, fewer than 2 choices, an empty choice (its
 * length divides acc_norm's log-likelihood), a gold index out of range or not
 * an integer, a HellaSwag task cut off before its 6th line, a file with no
 * item. A missing file is 66. */
#ifndef SP_MCTASK_H
#define SP_MCTASK_H

#include <stdint.h>

#define SP_MCTASK_FILE_BYTES_MAX ((int64_t)1 << 30)
#define SP_MCTASK_CHOICES_MAX 1024

typedef enum sp_mctask_format {
    SP_MCTASK_FORMAT_JSONL = 0,
    SP_MCTASK_FORMAT_HELLASWAG = 1,
} sp_mctask_format;

typedef struct sp_mctask_item {
    char *context;    /* NUL-terminated UTF-8 (may be empty) */
    char *delim;      /* target_delimiter, NUL-terminated */
    char **choice;    /* (n_choices) NUL-terminated, non-empty */
    int64_t n_choices;
    int64_t gold;     /* 0 <= gold < n_choices */
    int64_t line;     /* 1-based line of the file where the item starts */
} sp_mctask_item;

typedef struct sp_mctask {
    char *path;
    char name[128];   /* the file's base name without its extension */
    sp_mctask_format format;
    sp_mctask_item *items; /* (n_items) */
    int64_t n_items;
} sp_mctask;

/* Reads path; limit > 0 keeps only the first `limit` items (the rest of the
 * file is not parsed). 0, 65, 66, 70, 74. */
int sp_mctask_load(const char *path, int64_t limit, sp_mctask **out);
void sp_mctask_free(sp_mctask *t); /* accepts NULL */

/* lm-eval's HellaSwag `preprocess`, in place on the NUL-terminated s:
 * strip surrounding whitespace, " [title]" -> ". ", drop every shortest
 * "[...]", then each "  " (left to right, not overlapping) -> " ". */
void sp_mctask_hellaswag_pre(char *s);

/* Python's str.isspace for one code point (what str.strip/rstrip remove). */
int sp_mctask_is_space(uint32_t cp);
/* The number of bytes of trailing whitespace (Python's rstrip) of s[0..n);
 * s is valid UTF-8. */
int64_t sp_mctask_rstrip_bytes(const char *s, int64_t n);
/* Code points of valid UTF-8 s[0..n): Python's len(). */
int64_t sp_mctask_chars(const char *s, int64_t n);

#endif
