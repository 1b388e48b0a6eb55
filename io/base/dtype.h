/* io/base/dtype.h — tensor element types and float conversions.
 * Conversions never assume alignment: sources are read with memcpy. */
#ifndef SP_DTYPE_H
#define SP_DTYPE_H

#include <stdint.h>
#include <stddef.h>

typedef enum sp_dtype {
    SP_DTYPE_INVALID = 0,
    SP_DTYPE_F64,
    SP_DTYPE_F32,
    SP_DTYPE_F16,
    SP_DTYPE_BF16,
    SP_DTYPE_I64,
    SP_DTYPE_I32,
    SP_DTYPE_I16,
    SP_DTYPE_I8,
    SP_DTYPE_U8,
    SP_DTYPE_BOOL,
} sp_dtype;

/* "F32" -> SP_DTYPE_F32; SP_DTYPE_INVALID if unknown. (safetensors spelling) */
sp_dtype sp_dtype_from_st(const char *s);
const char *sp_dtype_st_name(sp_dtype t);
/* Bytes per element; 0 for SP_DTYPE_INVALID. */
int sp_dtype_size(sp_dtype t);
/* True for F32/F16/BF16, the dtypes slicepipe computes with. */
int sp_dtype_is_float(sp_dtype t);

float sp_f16_to_f32(uint16_t h);
uint16_t sp_f32_to_f16(float f);   /* round to nearest even */
float sp_bf16_to_f32(uint16_t h);
uint16_t sp_f32_to_bf16(float f);  /* round to nearest even; NaN stays NaN */

/* Converts n elements of `src` (dtype t, any alignment) to float32 in dst.
 * t must be F32, F16 or BF16 (or F64). Returns the index of the first
 * non-finite value, or -1 if all are finite. */
int64_t sp_convert_to_f32(sp_dtype t, const void *src, int64_t n, float *dst);

/* Converts n float32 to dtype t (F32, F16, BF16) into dst (any alignment). */
void sp_convert_from_f32(sp_dtype t, const float *src, int64_t n, void *dst);

/* The index of the first of n encoded elements of t (F32, F16, BF16; any
 * alignment) that is Inf or NaN, or -1: what a conversion's output must be
 * checked with, since a finite float32 can round to Inf (F16 past 65504). */
int64_t sp_dtype_first_nonfinite(sp_dtype t, const void *buf, int64_t n);

#endif
