/* gpu/backend_cuda.cu — the CUDA backend of the backend table (linalg/backend.h,
 * docs/pipeline.md §9): cuBLAS for the float32 and float64 products, cuSOLVER's
 * 64-bit cusolverDnXsyevd for eigh, and small kernels for the rest.
 *
 * Semantics are the CPU backend's (linalg/cpu.c); this file only says how
 * they are computed on a device.
 *
 * Process model. CUDA does not survive fork(): a process that initialized the
 * driver cannot use it in a forked child. slicepipe's supervisor forks its
 * stages after resolving the backend and sizing the plan, so nothing the
 * supervisor calls may initialize CUDA in its own process:
 *   - sp_bk_cuda_usable, identity and plan_bytes ask a short-lived forked
 *     PROBE child (cudaGetDeviceCount, the device's properties, a test kernel,
 *     the library versions, cusolverDnXsyevd_bufferSize for a given D) and
 *     cache its answer; the parent never touches the driver;
 *   - the device context (stream, cuBLAS and cuSOLVER handles) is created
 *     lazily in the process that first allocates (the compute stage, or a
 *     single-process command). Once it exists, the same questions are
 *     answered in-process (a probe from there would fail).
 *
 * Streams and synchrony. Every op is enqueued on one non-blocking stream, in
 * call order, so an op's outputs are ready for the next op. Ops that return
 * a value to the host (nll, cov_add's NaN check, eigh's checks and info)
 * synchronize; to_dev and to_host synchronize before returning, so the
 * caller's host buffer may be reused at once. The backend is driven by one
 * host thread.
 *
 * Errors. Calls that return a status (alloc, ws_init, cov_add, eigh) report a
 * failed CUDA/cuBLAS/cuSOLVER call as 70 with sp_fail's message. The void
 * ops have no status to return: a failed call there is fatal — one line
 * "slicepipe: internal error: cuda backend: ..." on stderr and _exit(70).
 *
 * Bits. cuBLAS is bit-reproducible for one library version, architecture and
 * SM count on one stream (its documented guarantee); the reductions here use
 * fixed trees (no float atomics), so every op is deterministic for fixed
 * inputs. FP32 products use plain FP32 (CUBLAS_DEFAULT_MATH, no TF32) unless
 * SLICEPIPE_CUDA_TF32=1; identity names the device, SM count, library and
 * driver versions and the math mode. Kernels are compiled with --fmad=false
 * so elementwise float arithmetic rounds like the CPU's.
 *
 * Overlap. to_dev/to_host of copies >= 2 half-buffers go through a pinned
 * double buffer (2 × SP_CUDA_PIN_HALF bytes, cudaHostAlloc, allocated by
 * ws_init): memcpy into one half while the DMA of the other runs. A source
 * already pinned or registered (cudaHostRegister) goes straight to the DMA.
 * SLICEPIPE_CUDA_STAGING=0 turns staging off. What the table cannot express
 * (uploads of the next layer on a copy stream while the compute stream runs,
 * device-resident calibration activations) needs asynchronous copies with
 * events in the table: see gpu/README.md.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern "C" {
#include "backend.h"
#include "error.h"
}

#define SP_CU_THREADS 256                      /* threads per block of the row kernels (a power of two) */
#define SP_CUDA_PIN_HALF ((int64_t)8 << 20)    /* bytes per half of the pinned double buffer */
#define SP_CUDA_SCORE_CAP ((int64_t)1 << 30)   /* attention score buffer target: heads × T × T floats */
#define SP_CUDA_PROBE_TIMEOUT_MS 120000        /* a probe child that answers later than this is killed */
#define SP_CUDA_MIN_CC_MAJOR 8                 /* oldest architecture compiled (CMAKE_CUDA_ARCHITECTURES) */

/* ------------------------------------------------------------------------ */
/* cuBLAS and cuSOLVER, loaded on first use                                  */

/* Linking libcublas/libcusolver would load them (and their ~270 MiB of RSS
 * after relocation) into every slicepipe process, CPU runs and the three
 * stages included, and the memory plan counts RSS. So they are dlopen'ed by
 * the process that creates a context (or the probe child), and the runtime
 * is linked statically (cudart_static loads the driver only at first use).
 * The library folder of the toolkit built against is tried first. */
#ifndef SP_CUDA_LIBDIR
#define SP_CUDA_LIBDIR "/usr/local/cuda/lib64"
#endif
#define SP_CUDA_FNS(X)                                                                                      \
    X(blas, cublasCreate_v2) X(blas, cublasSetStream_v2) X(blas, cublasSetMathMode)                          \
    X(blas, cublasSetPointerMode_v2) X(blas, cublasGetStatusString) X(blas, cublasGetProperty)               \
    X(blas, cublasSgemm_v2_64) X(blas, cublasSgemmStridedBatched_64) X(blas, cublasDgemm_v2_64)              \
    X(blas, cublasDsyrk_v2_64) X(blas, cublasSgeam_64) X(solver, cusolverDnCreate) X(solver, cusolverDnSetStream)                   \
    X(solver, cusolverDnCreateParams) X(solver, cusolverDnXsyevd_bufferSize) X(solver, cusolverDnXsyevd)    \
    X(solver, cusolverGetProperty)
#define SP_DECL(lib, fn) static decltype(&::fn) p_##fn;
SP_CUDA_FNS(SP_DECL)
#undef SP_DECL
static int g_libs_loaded;

static void *lib_open(const char *const *names, char *why, size_t n) {
    char path[512], errs[256] = "";
    for (int i = 0; names[i]; i++) {
        for (int dir = 0; dir < 2; dir++) {
            if (dir == 0)
                snprintf(path, sizeof path, "%s/%s", SP_CUDA_LIBDIR, names[i]);
            else
                snprintf(path, sizeof path, "%s", names[i]);
            void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (h) return h;
            const char *e = dlerror();
            if (!errs[0] && e) snprintf(errs, sizeof errs, "%s", e);
        }
    }
    snprintf(why, n, "cannot load %s: %s", names[0], errs[0] ? errs : "not found");
    return NULL;
}

/* 0, or -1 with the reason in why. */
static int libs_load(char *why, size_t n) {
    if (g_libs_loaded) return 0;
    static const char *const blas_names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so", NULL};
    static const char *const solver_names[] = {"libcusolver.so.12", "libcusolver.so.11", "libcusolver.so", NULL};
    void *blas = lib_open(blas_names, why, n);
    if (!blas) return -1;
    void *solver = lib_open(solver_names, why, n);
    if (!solver) return -1;
#define SP_LOAD(lib, fn)                                                          \
    p_##fn = (decltype(&::fn))dlsym(lib, #fn);                                    \
    if (!p_##fn) {                                                                \
        snprintf(why, n, "symbol %s missing from the CUDA libraries", #fn);      \
        return -1;                                                                \
    }
    SP_CUDA_FNS(SP_LOAD)
#undef SP_LOAD
    g_libs_loaded = 1;
    return 0;
}

static const char *blas_str(cublasStatus_t s) { return p_cublasGetStatusString ? p_cublasGetStatusString(s) : "cuBLAS error"; }

/* ------------------------------------------------------------------------ */
/* errors                                                                     */

__attribute__((noreturn)) static void cu_fatal(const char *op, const char *call, const char *detail) {
    sp_fail(SP_EX_SOFTWARE, "cuda backend: %s: %s failed: %s", op, call, detail);
    fprintf(stderr, "slicepipe: internal error: %s\n", sp_errmsg());
    fflush(stderr);
    _exit(SP_EX_SOFTWARE);
}

static const char *solver_str(cusolverStatus_t s) {
    switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "cuSOLVER error";
    }
}

/* Fatal checks (void ops) ... */
#define CU_DIE(op, call)                                                  \
    do {                                                                  \
        cudaError_t e_ = (call);                                          \
        if (e_ != cudaSuccess) cu_fatal(op, #call, cudaGetErrorString(e_)); \
    } while (0)
#define BL_DIE(op, call)                                                      \
    do {                                                                      \
        cublasStatus_t s_ = (call);                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS) cu_fatal(op, #call, blas_str(s_)); \
    } while (0)
#define LAUNCHED(op) CU_DIE(op, cudaGetLastError())

/* ... and status checks (ops that return 0 or 70). */
#define CU_RET(op, call)                                                                              \
    do {                                                                                              \
        cudaError_t e_ = (call);                                                                      \
        if (e_ != cudaSuccess)                                                                        \
            return sp_fail(SP_EX_SOFTWARE, "cuda backend: %s: %s failed: %s", op, #call, cudaGetErrorString(e_)); \
    } while (0)
#define BL_RET(op, call)                                                                              \
    do {                                                                                              \
        cublasStatus_t s_ = (call);                                                                   \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                              \
            return sp_fail(SP_EX_SOFTWARE, "cuda backend: %s: %s failed: %s", op, #call, blas_str(s_)); \
    } while (0)
#define SO_RET(op, call)                                                                              \
    do {                                                                                              \
        cusolverStatus_t s_ = (call);                                                                 \
        if (s_ != CUSOLVER_STATUS_SUCCESS)                                                            \
            return sp_fail(SP_EX_SOFTWARE, "cuda backend: %s: %s failed: %s", op, #call, solver_str(s_)); \
    } while (0)

/* ------------------------------------------------------------------------ */
/* what a probe (or the live context) knows about the device                 */

typedef struct cu_info {
    int ok;                     /* 1: a device is usable */
    char why[384];              /* when !ok */
    char name[128];
    int cc_major, cc_minor, sms;
    int64_t mem_total, mem_free;
    int driver, runtime;        /* e.g. 13000 */
    int blas_v[3], solver_v[3]; /* major, minor, patch */
    int64_t syevd_D;            /* the D the sizes below are for (0: none asked) */
    int64_t syevd_dev, syevd_host;
    int syevd_ok;
} cu_info;

/* The live device context of this process (created by ctx_init). */
static struct {
    int ready;
    cu_info info;
    cudaStream_t st;
    cublasHandle_t blas;
    cusolverDnHandle_t sol;
    cusolverDnParams_t sp;
    int tf32;
    int staging;                 /* SLICEPIPE_CUDA_STAGING != 0 */
    unsigned long long *d_bad;   /* (1) first non-finite flat index, device */
    double *d_tr;                /* (1) trace of H, device */
    int *d_info;                 /* (1) cusolver info, device */
    /* installed by the newest live workspace (NULL: none) */
    sp_bk_ws *ws;
    /* nll fallback scratch when no workspace covers T (tests) */
    int32_t *f_tgt;
    double *f_nll_d, *f_nll_h;
    int64_t f_cap;
} cx;

/* Probe answers of this process (before the context exists): the device
 * part once, the syevd sizes per D (a few Ds). */
static cu_info g_probe;
static int g_probed;
static struct {
    int64_t D, dev, host;
    int ok;
} g_syevd_cache[8];
static int g_syevd_n;

/* The syevd size query both the probe and the context use: on a one-element
 * dummy device buffer, since the query reads no matrix entries. */
static int syevd_query(cusolverDnHandle_t sol, cusolverDnParams_t sp, int64_t D, void *dummy, int64_t *dev,
                       int64_t *host) {
    size_t d = 0, h = 0;
    cusolverStatus_t s = p_cusolverDnXsyevd_bufferSize(sol, sp, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, D,
                                                     CUDA_R_64F, dummy, D, CUDA_R_64F, dummy, CUDA_R_64F, &d, &h);
    if (s != CUSOLVER_STATUS_SUCCESS) return -1;
    *dev = (int64_t)d;
    *host = (int64_t)h;
    return 0;
}

__global__ void k_probe(int *x) { *x = 12345; }

static void info_versions(cu_info *r) {
    cudaDriverGetVersion(&r->driver);
    cudaRuntimeGetVersion(&r->runtime);
    p_cublasGetProperty(MAJOR_VERSION, &r->blas_v[0]);
    p_cublasGetProperty(MINOR_VERSION, &r->blas_v[1]);
    p_cublasGetProperty(PATCH_LEVEL, &r->blas_v[2]);
    p_cusolverGetProperty(MAJOR_VERSION, &r->solver_v[0]);
    p_cusolverGetProperty(MINOR_VERSION, &r->solver_v[1]);
    p_cusolverGetProperty(PATCH_LEVEL, &r->solver_v[2]);
}

/* Runs in the probe child: fills r. */
static void probe_child(cu_info *r, int64_t D) {
    memset(r, 0, sizeof *r);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(r->why, sizeof r->why, "cudaGetDeviceCount: %s",
                 cudaGetErrorString(e));
        return;
    }
    if (n < 1) {
        snprintf(r->why, sizeof r->why, "no CUDA device");
        return;
    }
    cudaDeviceProp p;
    if ((e = cudaGetDeviceProperties(&p, 0)) != cudaSuccess) {
        snprintf(r->why, sizeof r->why, "cudaGetDeviceProperties: %s", cudaGetErrorString(e));
        return;
    }
    snprintf(r->name, sizeof r->name, "%.127s", p.name);
    r->cc_major = p.major;
    r->cc_minor = p.minor;
    r->sms = p.multiProcessorCount;
    if (p.major < SP_CUDA_MIN_CC_MAJOR) {
        snprintf(r->why, sizeof r->why, "CUDA device 0 (%.96s) has compute capability %d.%d; this build needs %d.0 or newer",
                 p.name, p.major, p.minor, SP_CUDA_MIN_CC_MAJOR);
        return;
    }
    int *d = NULL, h = 0;
    if ((e = cudaSetDevice(0)) != cudaSuccess || (e = cudaMalloc((void **)&d, 256)) != cudaSuccess) {
        snprintf(r->why, sizeof r->why, "cannot create a context on CUDA device 0 (%.96s): %s", p.name,
                 cudaGetErrorString(e));
        return;
    }
    k_probe<<<1, 1>>>(d);
    if ((e = cudaGetLastError()) != cudaSuccess || (e = cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost)) != cudaSuccess ||
        h != 12345) {
        snprintf(r->why, sizeof r->why, "a test kernel did not run on CUDA device 0 (%.96s, cc %d.%d): %s", p.name, p.major,
                 p.minor, e != cudaSuccess ? cudaGetErrorString(e) : "wrong result");
        return;
    }
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    r->mem_free = (int64_t)fr;
    r->mem_total = (int64_t)tot;
    if (libs_load(r->why, sizeof r->why)) return;
    info_versions(r);
    r->ok = 1;
    if (D > 0) {
        cusolverDnHandle_t sol;
        cusolverDnParams_t sp;
        r->syevd_D = D;
        if (p_cusolverDnCreate(&sol) == CUSOLVER_STATUS_SUCCESS && p_cusolverDnCreateParams(&sp) == CUSOLVER_STATUS_SUCCESS)
            r->syevd_ok = syevd_query(sol, sp, D, d, &r->syevd_dev, &r->syevd_host) == 0;
    }
}

/* Forks a probe child and reads its answer (never initializes CUDA here). */
static void probe_fork(cu_info *r, int64_t D) {
    memset(r, 0, sizeof *r);
    int fd[2];
    if (pipe(fd) != 0) {
        snprintf(r->why, sizeof r->why, "CUDA probe: pipe: %s", strerror(errno));
        return;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(r->why, sizeof r->why, "CUDA probe: fork: %s", strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return;
    }
    if (pid == 0) {
        close(fd[0]);
        static cu_info c;
        probe_child(&c, D);
        const char *p = (const char *)&c;
        size_t left = sizeof c;
        while (left > 0) {
            ssize_t w = write(fd[1], p, left);
            if (w <= 0) break;
            p += w;
            left -= (size_t)w;
        }
        _exit(0);
    }
    close(fd[1]);
    char *p = (char *)r;
    size_t got = 0;
    int timed_out = 0;
    while (got < sizeof *r) {
        struct pollfd pf = {fd[0], POLLIN, 0};
        int pr = poll(&pf, 1, SP_CUDA_PROBE_TIMEOUT_MS);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) {
            timed_out = pr == 0;
            break;
        }
        ssize_t n = read(fd[0], p + got, sizeof *r - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd[0]);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got != sizeof *r) {
        memset(r, 0, sizeof *r);
        if (timed_out)
            snprintf(r->why, sizeof r->why, "CUDA probe gave no answer within %d s", SP_CUDA_PROBE_TIMEOUT_MS / 1000);
        else if (WIFSIGNALED(status))
            snprintf(r->why, sizeof r->why, "CUDA probe died with signal %d", WTERMSIG(status));
        else
            snprintf(r->why, sizeof r->why, "CUDA probe exited with status %d", WEXITSTATUS(status));
    }
    r->why[sizeof r->why - 1] = 0;
    r->name[sizeof r->name - 1] = 0;
}

static const cu_info *device_info(void) {
    if (cx.ready) return &cx.info;
    if (!g_probed) {
        probe_fork(&g_probe, 0);
        g_probed = 1;
    }
    return &g_probe;
}

extern "C" int sp_bk_cuda_usable(char *why, int64_t n) {
    const cu_info *r = device_info();
    if (r->ok) return 1;
    if (why && n > 0) snprintf(why, (size_t)n, "%s", r->why);
    return 0;
}

static int env_flag(const char *name, int dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    return strcmp(v, "0") != 0;
}

/* Creates this process's context; 0 or 70. */
static int ctx_init(void) {
    if (cx.ready) return 0;
    cu_info *r = &cx.info;
    memset(r, 0, sizeof *r);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1)
        return sp_fail(SP_EX_SOFTWARE, "cuda backend: no usable CUDA device (%s)",
                       e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found none");
    cudaDeviceProp p;
    CU_RET("init", cudaGetDeviceProperties(&p, 0));
    CU_RET("init", cudaSetDevice(0));
    char why[384];
    if (libs_load(why, sizeof why)) return sp_fail(SP_EX_SOFTWARE, "cuda backend: %s", why);
    snprintf(r->name, sizeof r->name, "%.127s", p.name);
    r->cc_major = p.major;
    r->cc_minor = p.minor;
    r->sms = p.multiProcessorCount;
    info_versions(r);
    CU_RET("init", cudaStreamCreateWithFlags(&cx.st, cudaStreamNonBlocking));
    BL_RET("init", p_cublasCreate_v2(&cx.blas));
    BL_RET("init", p_cublasSetStream_v2(cx.blas, cx.st));
    cx.tf32 = env_flag("SLICEPIPE_CUDA_TF32", 0);
    BL_RET("init", p_cublasSetMathMode(cx.blas, cx.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    BL_RET("init", p_cublasSetPointerMode_v2(cx.blas, CUBLAS_POINTER_MODE_HOST));
    SO_RET("init", p_cusolverDnCreate(&cx.sol));
    SO_RET("init", p_cusolverDnSetStream(cx.sol, cx.st));
    SO_RET("init", p_cusolverDnCreateParams(&cx.sp));
    CU_RET("init", cudaMalloc((void **)&cx.d_bad, sizeof *cx.d_bad));
    CU_RET("init", cudaMalloc((void **)&cx.d_tr, sizeof *cx.d_tr));
    CU_RET("init", cudaMalloc((void **)&cx.d_info, sizeof *cx.d_info));
    size_t fr = 0, tot = 0;
    CU_RET("init", cudaMemGetInfo(&fr, &tot));
    r->mem_free = (int64_t)fr;
    r->mem_total = (int64_t)tot;
    cx.staging = env_flag("SLICEPIPE_CUDA_STAGING", 1);
    r->ok = 1;
    cx.ready = 1;
    return 0;
}

static void ctx_need(const char *op) {
    if (!cx.ready) {
        int rc = ctx_init();
        if (rc) cu_fatal(op, "context init", sp_errmsg());
    }
}

/* ------------------------------------------------------------------------ */
/* launch geometry and deterministic block reductions                        */

static unsigned grid_for(int64_t n) {
    int64_t b = (n + SP_CU_THREADS - 1) / SP_CU_THREADS;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20; /* grid-stride loops cover the rest */
    return (unsigned)b;
}
static unsigned rows_grid(int64_t rows) { return (unsigned)(rows < 1 ? 1 : rows > (1 << 20) ? (1 << 20) : rows); }

/* Sum / max over the block through shared memory in a fixed tree: the same
 * bits for the same inputs and blockDim (SP_CU_THREADS). Every thread gets
 * the result. */
template <typename T> __device__ T block_sum(T v, T *sh) {
    int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int s = SP_CU_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] = sh[t] + sh[t + s];
        __syncthreads();
    }
    T r = sh[0];
    __syncthreads();
    return r;
}
/* The block's maximum, by the same fixed tree (float or double). */
template <typename T> __device__ T block_max(T v, T *sh) {
    int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int s = SP_CU_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] = sh[t + s] > sh[t] ? sh[t + s] : sh[t];
        __syncthreads();
    }
    T r = sh[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ int nonfinite_f32(float x) { return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u; }
__device__ __forceinline__ int nonfinite_f64(double x) {
    return (__double_as_longlong(x) & 0x7ff0000000000000ll) == 0x7ff0000000000000ll;
}

/* ------------------------------------------------------------------------ */
/* elementwise float32 kernels                                               */

__global__ void k_add(float *y, const float *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

__global__ void k_add_bias(float *y, const float *b, int64_t rows, int64_t n) {
    int64_t total = rows * n;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += b[i % n];
}

/* One block per row of x (rows, d): float64 sums, divide by the original D;
 * then the CPU's float32 expressions (backend.h: inv = (float)(1/sqrt(ss/D +
 * eps)); RMS r·inv·γ; LayerNorm (float)(r − mean)·inv·γ + β). */
__global__ void k_norm(int kind, const float *gamma, const float *beta, int64_t d, int64_t D, double eps, float *x,
                       int64_t rows) {
    __shared__ double sh[SP_CU_THREADS];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float *row = x + r * d;
        if (kind == SP_BK_NORM_RMS) {
            double ss = 0.0;
            for (int64_t j = threadIdx.x; j < d; j += blockDim.x) ss += (double)row[j] * (double)row[j];
            ss = block_sum(ss, sh);
            float inv = (float)(1.0 / sqrt(ss / (double)D + eps));
            for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
                row[j] = gamma ? row[j] * inv * gamma[j] : row[j] * inv;
            }
        } else {
            double s = 0.0;
            for (int64_t j = threadIdx.x; j < d; j += blockDim.x) s += (double)row[j];
            s = block_sum(s, sh);
            double mean = s / (double)D;
            double ss = 0.0;
            for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
                double c = (double)row[j] - mean;
                ss += c * c;
            }
            ss = block_sum(ss, sh);
            float inv = (float)(1.0 / sqrt(ss / (double)D + eps));
            for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
                float v = (float)((double)row[j] - mean) * inv;
                if (gamma) v = v * gamma[j];
                if (beta) v = v + beta[j];
                row[j] = v;
            }
        }
    }
}

/* One thread per rotated pair: (t, h, i), i < rot/2. */
__global__ void k_rope(int kind, float *x, int64_t T, int64_t ld, int64_t nh, int64_t hd, int64_t rot,
                       const float *cos_t, const float *sin_t) {
    int64_t hr = rot / 2, total = T * nh * hr;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e % hr, th = e / hr, h = th % nh, t = th / nh;
        float c = cos_t[t * hr + i], s = sin_t[t * hr + i];
        float *p = x + t * ld + h * hd;
        int64_t ia = kind == SP_BK_ROPE_HALF ? i : 2 * i, ib = kind == SP_BK_ROPE_HALF ? i + hr : 2 * i + 1;
        float a = p[ia], b = p[ib];
        p[ia] = a * c - b * s;
        p[ib] = b * c + a * s;
    }
}

__device__ __forceinline__ float gelu_tanh(float g) {
    const float k0 = 0.7978845608028654f, k1 = 0.044715f; /* sqrt(2/pi) */
    return 0.5f * g * (1.0f + tanhf(k0 * (g + k1 * g * g * g)));
}

__global__ void k_act(int kind, float *gate, const float *up, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float g = gate[i], r;
        switch (kind) {
        case SP_BK_ACT_SILU_GLU: r = g / (1.0f + expf(g < -80.0f ? 80.0f : -g)) * up[i]; break;
        case SP_BK_ACT_GELU_TANH_GLU: r = gelu_tanh(g) * up[i]; break;
        case SP_BK_ACT_GELU_GLU: r = 0.5f * g * (1.0f + erff(g * 0.7071067811865476f)) * up[i]; break;
        case SP_BK_ACT_RELU: r = g > 0.0f ? g : 0.0f; break;
        default: r = gelu_tanh(g); break; /* SP_BK_ACT_GELU_TANH */
        }
        gate[i] = r;
    }
}

/* Softmax of the scores of one (head, query row) per block, in place:
 * S (heads, T, T), row i of head hh at S + (hh·T + i)·T. Keys j in
 * [lo, i] are kept (lo = i − window + 1 with a window), the rest set to 0. */
__global__ void k_softmax(float *S, int64_t T, int64_t window) {
    __shared__ float sh[SP_CU_THREADS];
    int64_t i = blockIdx.x, hh = blockIdx.y;
    float *row = S + (hh * T + i) * T;
    int64_t lo = window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
    float m = -INFINITY;
    for (int64_t j = lo + threadIdx.x; j <= i; j += blockDim.x) m = row[j] > m ? row[j] : m;
    m = block_max(m, sh);
    float s = 0.0f;
    for (int64_t j = lo + threadIdx.x; j <= i; j += blockDim.x) {
        float z = row[j] - m;
        float e = z < -87.0f ? 0.0f : expf(z);
        row[j] = e;
        s += e;
    }
    s = block_sum(s, sh);
    float inv = 1.0f / s;
    for (int64_t j = threadIdx.x; j < T; j += blockDim.x) row[j] = j >= lo && j <= i ? row[j] * inv : 0.0f;
}

/* The same for attention_cached, in place: S (heads, Tq, Tk), row i of head
 * hh at S + (hh·Tq + i)·Tk is query position p = Tk − Tq + i, which keeps
 * keys j in [lo, p] (lo = p − window + 1 with a window), the rest set to 0. */
__global__ void k_softmax_cached(float *S, int64_t Tq, int64_t Tk, int64_t window) {
    __shared__ float sh[SP_CU_THREADS];
    int64_t i = blockIdx.x, hh = blockIdx.y, p = Tk - Tq + i;
    float *row = S + (hh * Tq + i) * Tk;
    int64_t lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    float m = -INFINITY;
    for (int64_t j = lo + threadIdx.x; j <= p; j += blockDim.x) m = row[j] > m ? row[j] : m;
    m = block_max(m, sh);
    float s = 0.0f;
    for (int64_t j = lo + threadIdx.x; j <= p; j += blockDim.x) {
        float z = row[j] - m;
        float e = z < -87.0f ? 0.0f : expf(z);
        row[j] = e;
        s += e;
    }
    s = block_sum(s, sh);
    float inv = 1.0f / s;
    for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) row[j] = j >= lo && j <= p ? row[j] * inv : 0.0f;
}

/* Per-row NLL: out[t] = m + log Σ exp(l − m) − l[target[t]], float64, one
 * block per row t < rows; tgt holds the targets already shifted (tgt[t] is
 * the token predicted at t). */
__global__ void k_nll(const float *logits, int64_t rows, int64_t V, const int32_t *tgt, double *out) {
    __shared__ float shf[SP_CU_THREADS];
    __shared__ double shd[SP_CU_THREADS];
    for (int64_t t = blockIdx.x; t < rows; t += gridDim.x) {
        const float *row = logits + t * V;
        float m = -INFINITY;
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = row[j] > m ? row[j] : m;
        m = block_max(m, shf);
        double se = 0.0;
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) se += exp((double)row[j] - (double)m);
        se = block_sum(se, shd);
        if (threadIdx.x == 0) out[t] = (double)m + log(se) - (double)row[tgt[t]];
    }
}

/* ------------------------------------------------------------------------ */
/* float64 kernels                                                           */

/* First non-finite entry (smallest flat index r·D + j) of X (rows, D) with
 * row stride ld into *bad (initialized to all ones). */
__global__ void k_find_nonfinite_f32(const float *X, int64_t rows, int64_t D, int64_t ld, unsigned long long *bad) {
    int64_t total = rows * D;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / D, j = e % D;
        if (nonfinite_f32(X[r * ld + j])) atomicMin(bad, (unsigned long long)e);
    }
}

/* Xd (nr, D) float64 ← X rows [r0, r0 + nr), row stride ld. */
__global__ void k_widen_rows(const float *X, int64_t ld, int64_t nr, int64_t D, double *Xd) {
    int64_t total = nr * D;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
        Xd[e] = (double)X[(e / D) * ld + e % D];
}

/* Non-finite entries of the upper triangle of H (D, D), and the trace summed
 * in index order by one thread (the CPU's order, so δ has the CPU's bits). */
__global__ void k_find_nonfinite_upper(const double *H, int64_t D, unsigned long long *bad) {
    int64_t total = D * D;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
        if (e % D >= e / D && nonfinite_f64(H[e])) atomicMin(bad, (unsigned long long)e);
}
__global__ void k_trace_seq(const double *H, int64_t D, double *tr) {
    double s = 0.0;
    for (int64_t i = 0; i < D; i++) s += H[i * D + i];
    *tr = s;
}

/* A (D, D) ← the upper triangle of H with δ on the diagonal, zero below:
 * row-major upper = column-major lower, which cusolver reads. */
__global__ void k_damped_copy(const double *H, int64_t D, double delta, double *A) {
    int64_t total = D * D;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e / D, j = e % D;
        A[e] = j > i ? H[e] : j == i ? H[e] + delta : 0.0;
    }
}

/* Sign of ascending eigenvector c (column c of column-major A = A[c·D ..]):
 * +1 or −1 so that its largest-|·| component is positive, the first on ties.
 * Two passes: the largest magnitude m (exact), then the first component with
 * |v_i| >= m·(1 − SP_SIGN_TIE). On exact ties, or gaps above SP_SIGN_TIE,
 * this is the CPU's rule; a gap of a few ulps — rounding noise, which differs
 * between solvers — counts as a tie, so a symmetric tie the CPU sees exactly
 * (e.g. (1, −1)/√2) resolves the same way here. */
#define SP_SIGN_TIE 4e-15
__global__ void k_sign(const double *A, int64_t D, double *sgn) {
    __shared__ double sv[SP_CU_THREADS];
    __shared__ int64_t si[SP_CU_THREADS];
    int64_t c = blockIdx.x;
    const double *v = A + c * D;
    int t = threadIdx.x;
    double best = 0.0;
    for (int64_t i = t; i < D; i += blockDim.x) best = fabs(v[i]) > best ? fabs(v[i]) : best;
    best = block_max(best, sv);
    double thr = best - best * SP_SIGN_TIE;
    int64_t arg = D;
    for (int64_t i = t; i < D; i += blockDim.x)
        if (fabs(v[i]) >= thr && i < arg) arg = i;
    si[t] = arg;
    __syncthreads();
    for (int s = SP_CU_THREADS / 2; s > 0; s >>= 1) {
        if (t < s && si[t + s] < si[t]) si[t] = si[t + s];
        __syncthreads();
    }
    if (t == 0) sgn[c] = v[si[0]] < 0 ? -1.0 : 1.0;
}

/* Q (D, D) row-major, Q[i·D + jj] = sgn[c]·A[c·D + i] with c = D − 1 − jj
 * (ascending → descending, vectors → columns), through 32×32 tiles; and
 * evals[jj] = w[D − 1 − jj]. */
#define SP_TILE 32
__global__ void k_eig_out(const double *A, const double *sgn, const double *w, int64_t D, double *Q, double *evals) {
    __shared__ double tile[SP_TILE][SP_TILE + 1];
    int64_t c0 = (int64_t)blockIdx.y * SP_TILE, i0 = (int64_t)blockIdx.x * SP_TILE;
    for (int dy = threadIdx.y; dy < SP_TILE; dy += blockDim.y) {
        int64_t c = c0 + dy, i = i0 + threadIdx.x;
        if (c < D && i < D) tile[dy][threadIdx.x] = sgn[c] * A[c * D + i];
    }
    __syncthreads();
    for (int dy = threadIdx.y; dy < SP_TILE; dy += blockDim.y) {
        int64_t i = i0 + dy, c = c0 + threadIdx.x;
        if (c < D && i < D) Q[i * D + (D - 1 - c)] = tile[threadIdx.x][dy];
    }
    if (blockIdx.x == 0 && threadIdx.y == 0) {
        int64_t c = c0 + threadIdx.x;
        if (c < D) evals[D - 1 - c] = w[c];
    }
}

/* Wd (nr, D) = W rows [0, nr) (row stride D) · diag γ, in float64. */
__global__ void k_widen_scaled(const float *W, int64_t nr, int64_t D, const float *gamma, double *Wd) {
    int64_t total = nr * D;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
        Wd[e] = gamma ? (double)W[e] * (double)gamma[e % D] : (double)W[e];
}

/* Wd (D, nc) ← W[:, c0 : c0 + nc] of W (D, cols). */
__global__ void k_widen_cols(const float *W, int64_t D, int64_t cols, int64_t c0, int64_t nc, double *Wd) {
    int64_t total = D * nc;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
        Wd[e] = (double)W[(e / nc) * cols + c0 + e % nc];
}

/* dst (rows, cols) float32 with row stride ld ← src (rows, cols) float64 packed. */
__global__ void k_narrow(const double *src, int64_t rows, int64_t cols, float *dst, int64_t ld) {
    int64_t total = rows * cols;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
        dst[(e / cols) * ld + e % cols] = (float)src[e];
}

/* Qf (D, k) = Q[:, :k] and/or Qt (k, D) = Q[:, :k]ᵀ, float32. */
__global__ void k_basis_f32(const double *Q, int64_t D, int64_t k, float *Qf, float *Qt) {
    int64_t total = D * k;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e / k, j = e % k;
        float v = (float)Q[i * D + j];
        if (Qf) Qf[e] = v;
        if (Qt) Qt[j * D + i] = v;
    }
}

/* ------------------------------------------------------------------------ */
/* workspace: one size function for plan_bytes and ws_init                   */

struct sp_bk_ws {
    sp_bk_plan_in in;
    sp_bk_plan plan;
    int64_t heads_cap;   /* query heads whose scores fit the score buffer */
    double *xd;          /* (cov_rows, D) float64 staging of cov_add */
    double *rw, *ro;     /* (rot_block, D) each: rotation input / output staging */
    double *A;           /* (D, D) eigh working matrix, then its eigenvectors */
    double *w;           /* (D) ascending eigenvalues */
    double *sgn;         /* (D) signs of the ascending eigenvectors */
    void *sol_dev;       /* cusolverDnXsyevd device workspace */
    void *sol_host;      /* cusolverDnXsyevd host workspace */
    int64_t sol_dev_bytes, sol_host_bytes;
    float *scores;       /* (heads_cap, T, T) attention scores / probabilities */
    int32_t *tgt;        /* (T) nll targets, device */
    double *nll_d;       /* (T) per-row NLL, device */
    double *nll_h;       /* (T) per-row NLL, host */
    unsigned char *pin;  /* 2 × SP_CUDA_PIN_HALF pinned host staging */
    cudaEvent_t ev[2];   /* last DMA from each half */
    int ev_made;
};

typedef struct ws_sizes {
    int64_t xd, rot, A, w, sgn, sol_dev, sol_host, scores, tgt, nll_d, nll_h, pin;
    int64_t heads_cap;
    int64_t dev_total, host_total;
} ws_sizes;

static int64_t syevd_fallback_bytes(int64_t D) {
    /* LAPACK dsyevd's documented lwork (1 + 6D + 2D²) doubles plus liwork
     * (3 + 5D) ints: the bound used when no probe could answer. */
    if (D > ((int64_t)1 << 28)) return INT64_MAX / 4;
    return (1 + 6 * D + 2 * D * D) * 8 + (3 + 5 * D) * 4;
}

/* cusolverDnXsyevd workspace for D: from the live context, else from a
 * probe child (cached per D). */
static void syevd_bytes(int64_t D, int64_t *dev, int64_t *host) {
    *dev = 0;
    *host = 0;
    if (D < 1) return;
    if (cx.ready) {
        if (syevd_query(cx.sol, cx.sp, D, cx.d_tr, dev, host) == 0) return;
        *dev = syevd_fallback_bytes(D);
        return;
    }
    for (int i = 0; i < g_syevd_n; i++)
        if (g_syevd_cache[i].D == D) {
            *dev = g_syevd_cache[i].dev;
            *host = g_syevd_cache[i].host;
            return;
        }
    cu_info r;
    probe_fork(&r, D);
    if (r.ok && r.syevd_ok) {
        *dev = r.syevd_dev;
        *host = r.syevd_host;
    } else {
        *dev = syevd_fallback_bytes(D);
    }
    if (g_syevd_n < (int)(sizeof g_syevd_cache / sizeof g_syevd_cache[0])) {
        g_syevd_cache[g_syevd_n].D = D;
        g_syevd_cache[g_syevd_n].dev = *dev;
        g_syevd_cache[g_syevd_n].host = *host;
        g_syevd_n++;
    }
}

static int mul3(int64_t a, int64_t b, int64_t c, int64_t *out) {
    int64_t t;
    return sp_mul_i64(a, b, &t) || sp_mul_i64(t, c, out);
}

/* Returns 0, or 1 on a size overflow or a negative input. */
static int ws_size(const sp_bk_plan_in *in, ws_sizes *s) {
    memset(s, 0, sizeof *s);
    if (in->D < 0 || in->cov_rows < 0 || in->rot_block < 0 || in->T < 0 || in->n_heads < 0) return 1;
    int64_t D = in->D, T = in->T;
    if (mul3(in->cov_rows, D, 8, &s->xd) || mul3(in->rot_block, D, 8, &s->rot) || mul3(D, D, 8, &s->A)) return 1;
    s->w = s->sgn = D * 8;
    syevd_bytes(D, &s->sol_dev, &s->sol_host);
    /* Heads per attention pass: as many as fit SP_CUDA_SCORE_CAP, at least one. */
    int64_t tt;
    if (mul3(T, T, 4, &tt)) return 1;
    s->heads_cap = 0;
    if (T > 0 && in->n_heads > 0) {
        s->heads_cap = SP_CUDA_SCORE_CAP / tt;
        if (s->heads_cap < 1) s->heads_cap = 1;
        if (s->heads_cap > in->n_heads) s->heads_cap = in->n_heads;
    }
    if (sp_mul_i64(s->heads_cap, tt, &s->scores)) return 1;
    s->tgt = T * 4;
    s->nll_d = s->nll_h = T * 8;
    s->pin = 2 * SP_CUDA_PIN_HALF;
    int64_t parts[] = {s->xd, s->rot, s->rot, s->A, s->w, s->sgn, s->sol_dev, s->scores, s->tgt, s->nll_d};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (sp_add_i64(s->dev_total, parts[i], &s->dev_total)) return 1;
    if (sp_add_i64(s->sol_host, s->nll_h, &s->host_total) || sp_add_i64(s->host_total, s->pin, &s->host_total)) return 1;
    return 0;
}

static sp_bk_plan cu_plan_bytes(const sp_bk *bk, const sp_bk_plan_in *in) {
    ws_sizes s;
    sp_bk_plan p;
    if (ws_size(in, &s)) {
        p.host_bytes = p.device_bytes = INT64_MAX; /* backend.h: refused by any budget; ws_init fails */
        return p;
    }
    p.host_bytes = s.host_total;
    p.device_bytes = s.dev_total;
    return p;
}

static void cu_ws_free(const sp_bk *bk, sp_bk_ws *ws) {
    if (!ws) return;
    if (cx.ready) {
        cudaStreamSynchronize(cx.st);
        cudaFree(ws->xd);
        cudaFree(ws->rw);
        cudaFree(ws->ro);
        cudaFree(ws->A);
        cudaFree(ws->w);
        cudaFree(ws->sgn);
        cudaFree(ws->sol_dev);
        cudaFree(ws->scores);
        cudaFree(ws->tgt);
        cudaFree(ws->nll_d);
        if (ws->pin) cudaFreeHost(ws->pin);
        if (ws->ev_made) {
            cudaEventDestroy(ws->ev[0]);
            cudaEventDestroy(ws->ev[1]);
        }
    }
    free(ws->sol_host);
    free(ws->nll_h);
    if (cx.ws == ws) cx.ws = NULL;
    free(ws);
}

static int dev_alloc(void **p, int64_t bytes, const char *what) {
    *p = NULL;
    if (bytes <= 0) return 0;
    cudaError_t e = cudaMalloc(p, (size_t)bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        size_t fr = 0, tot = 0;
        cudaGetLastError(); /* clear the (non-sticky) allocation error */
        cudaMemGetInfo(&fr, &tot);
        return sp_fail(SP_EX_SOFTWARE,
                       "cuda backend: out of device memory allocating %lld bytes for %s (%lld of %lld bytes free): %s",
                       (long long)bytes, what, (long long)fr, (long long)tot, cudaGetErrorString(e));
    }
    return 0;
}

static int cu_ws_init(const sp_bk *bk, const sp_bk_plan_in *in, sp_bk_ws **out) {
    *out = NULL;
    SP_TRY(ctx_init());
    ws_sizes s;
    if (ws_size(in, &s))
        return sp_fail(SP_EX_SOFTWARE, "cuda backend: workspace for D %lld, T %lld, %lld heads overflows",
                       (long long)in->D, (long long)in->T, (long long)in->n_heads);
    sp_bk_ws *ws;
    SP_TRY(sp_calloc((void **)&ws, 1, (int64_t)sizeof *ws, "cuda workspace"));
    ws->in = *in;
    ws->heads_cap = s.heads_cap;
    ws->sol_dev_bytes = s.sol_dev;
    ws->sol_host_bytes = s.sol_host;
    ws->plan.device_bytes = s.dev_total;
    ws->plan.host_bytes = s.host_total;
    int rc = 0;
    if (!rc) rc = dev_alloc((void **)&ws->xd, s.xd, "second-moment staging (cov_rows, D) float64");
    if (!rc) rc = dev_alloc((void **)&ws->rw, s.rot, "rotation input staging (rot_block, D) float64");
    if (!rc) rc = dev_alloc((void **)&ws->ro, s.rot, "rotation output staging (rot_block, D) float64");
    if (!rc) rc = dev_alloc((void **)&ws->A, s.A, "eigensolver matrix (D, D) float64");
    if (!rc) rc = dev_alloc((void **)&ws->w, s.w, "eigenvalues (D)");
    if (!rc) rc = dev_alloc((void **)&ws->sgn, s.sgn, "eigenvector signs (D)");
    if (!rc) rc = dev_alloc(&ws->sol_dev, s.sol_dev, "cusolverDnXsyevd device workspace");
    if (!rc) rc = dev_alloc((void **)&ws->scores, s.scores, "attention scores (heads, T, T)");
    if (!rc) rc = dev_alloc((void **)&ws->tgt, s.tgt, "nll targets (T)");
    if (!rc) rc = dev_alloc((void **)&ws->nll_d, s.nll_d, "per-row nll (T)");
    if (!rc && s.sol_host > 0) rc = sp_alloc(&ws->sol_host, s.sol_host, 1, "cusolverDnXsyevd host workspace");
    if (!rc && s.nll_h > 0) rc = sp_alloc((void **)&ws->nll_h, s.nll_h, 1, "per-row nll (T), host");
    if (!rc) {
        cudaError_t e = cudaHostAlloc((void **)&ws->pin, (size_t)s.pin, cudaHostAllocDefault);
        if (e != cudaSuccess) {
            ws->pin = NULL;
            rc = sp_fail(SP_EX_SOFTWARE, "cuda backend: cudaHostAlloc of %lld pinned bytes for the copy staging: %s",
                         (long long)s.pin, cudaGetErrorString(e));
        }
    }
    if (!rc) {
        if (cudaEventCreateWithFlags(&ws->ev[0], cudaEventDisableTiming) != cudaSuccess ||
            cudaEventCreateWithFlags(&ws->ev[1], cudaEventDisableTiming) != cudaSuccess)
            rc = sp_fail(SP_EX_SOFTWARE, "cuda backend: cudaEventCreate failed");
        else
            ws->ev_made = 1;
    }
    /* The planned syevd workspace must cover what this context's solver asks for. */
    if (!rc && in->D > 0) {
        int64_t d = 0, h = 0;
        if (syevd_query(cx.sol, cx.sp, in->D, ws->w, &d, &h) != 0)
            rc = sp_fail(SP_EX_SOFTWARE, "cuda backend: cusolverDnXsyevd_bufferSize failed for D %lld", (long long)in->D);
        else if (d > ws->sol_dev_bytes || h > ws->sol_host_bytes)
            rc = sp_fail(SP_EX_SOFTWARE,
                         "cuda backend: cusolverDnXsyevd needs %lld device + %lld host bytes at D %lld, the plan has "
                         "%lld + %lld",
                         (long long)d, (long long)h, (long long)in->D, (long long)ws->sol_dev_bytes,
                         (long long)ws->sol_host_bytes);
    }
    if (rc) {
        cu_ws_free(bk, ws);
        return rc;
    }
    cx.ws = ws; /* the newest workspace lends its pinned staging and nll scratch */
    *out = ws;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* lifecycle, identity, buffers                                              */

/* The count is recorded (and named by identity, as every backend's is) but
 * plays no part in device results: the kernels' geometry is fixed. */
static int g_threads = 1;
static int cu_set_threads(const sp_bk *bk, int64_t n, int64_t D) {
    g_threads = n > 0 ? (int)(n < (1 << 20) ? n : 1 << 20) : 1;
    return g_threads;
}

static void cu_identity(const sp_bk *bk, char *buf, int64_t n) {
    if (!buf || n <= 0) return;
    const cu_info *r = device_info();
    if (!r->ok) {
        snprintf(buf, (size_t)n, "cuda unavailable (%s)", r->why);
        return;
    }
    int tf32 = cx.ready ? cx.tf32 : env_flag("SLICEPIPE_CUDA_TF32", 0);
    /* No thread count: the pipeline journals it and every resume reuses it. */
    snprintf(buf, (size_t)n, "cuda %s cc%d.%d sms=%d cublas-%d.%d.%d cusolver-%d.%d.%d driver-%d.%d math=%s", r->name,
             r->cc_major, r->cc_minor, r->sms, r->blas_v[0], r->blas_v[1], r->blas_v[2], r->solver_v[0], r->solver_v[1],
             r->solver_v[2], r->driver / 1000, (r->driver % 1000) / 10, tf32 ? "tf32" : "fp32");
}

/* Free device memory as the probe (or the live context) saw it. */
static int64_t cu_device_bytes_free(const sp_bk *bk) {
    const cu_info *r = device_info();
    return r->ok ? r->mem_free : 0;
}

static int cu_alloc(const sp_bk *bk, void **p, int64_t bytes, const char *what) {
    *p = NULL;
    if (bytes < 0) return sp_fail(SP_EX_SOFTWARE, "cuda backend: negative allocation for %s", what);
    SP_TRY(ctx_init());
    return dev_alloc(p, bytes > 0 ? bytes : 256, what);
}

static void cu_free(const sp_bk *bk, void *p) {
    if (!p || !cx.ready) return;
    CU_DIE("free", cudaStreamSynchronize(cx.st));
    CU_DIE("free", cudaFree(p));
}

static int host_pinned(const void *p) {
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return a.type == cudaMemoryTypeHost;
}

static int use_staging(const void *host, int64_t bytes) {
    return cx.staging && cx.ws && cx.ws->pin && bytes >= 2 * SP_CUDA_PIN_HALF && !host_pinned(host);
}

static void cu_to_dev(const sp_bk *bk, void *dst, const void *src_host, int64_t bytes) {
    if (bytes <= 0) return;
    ctx_need("to_dev");
    if (!use_staging(src_host, bytes)) {
        CU_DIE("to_dev", cudaMemcpyAsync(dst, src_host, (size_t)bytes, cudaMemcpyHostToDevice, cx.st));
        CU_DIE("to_dev", cudaStreamSynchronize(cx.st));
        return;
    }
    sp_bk_ws *ws = cx.ws;
    const unsigned char *s = (const unsigned char *)src_host;
    unsigned char *d = (unsigned char *)dst;
    int b = 0;
    for (int64_t off = 0; off < bytes; off += SP_CUDA_PIN_HALF, b ^= 1) {
        int64_t n = bytes - off < SP_CUDA_PIN_HALF ? bytes - off : SP_CUDA_PIN_HALF;
        unsigned char *hb = ws->pin + b * SP_CUDA_PIN_HALF;
        CU_DIE("to_dev", cudaEventSynchronize(ws->ev[b])); /* the DMA that last read this half is done */
        memcpy(hb, s + off, (size_t)n);
        CU_DIE("to_dev", cudaMemcpyAsync(d + off, hb, (size_t)n, cudaMemcpyHostToDevice, cx.st));
        CU_DIE("to_dev", cudaEventRecord(ws->ev[b], cx.st));
    }
    CU_DIE("to_dev", cudaStreamSynchronize(cx.st));
}

static void cu_to_host(const sp_bk *bk, void *dst_host, const void *src, int64_t bytes) {
    if (bytes <= 0) return;
    ctx_need("to_host");
    if (!use_staging(dst_host, bytes)) {
        CU_DIE("to_host", cudaMemcpyAsync(dst_host, src, (size_t)bytes, cudaMemcpyDeviceToHost, cx.st));
        CU_DIE("to_host", cudaStreamSynchronize(cx.st));
        return;
    }
    sp_bk_ws *ws = cx.ws;
    const unsigned char *s = (const unsigned char *)src;
    unsigned char *d = (unsigned char *)dst_host;
    int64_t prev_off = -1, prev_n = 0;
    int prev_b = 0, b = 0;
    for (int64_t off = 0; off < bytes; off += SP_CUDA_PIN_HALF, b ^= 1) {
        int64_t n = bytes - off < SP_CUDA_PIN_HALF ? bytes - off : SP_CUDA_PIN_HALF;
        unsigned char *hb = ws->pin + b * SP_CUDA_PIN_HALF;
        CU_DIE("to_host", cudaMemcpyAsync(hb, s + off, (size_t)n, cudaMemcpyDeviceToHost, cx.st));
        CU_DIE("to_host", cudaEventRecord(ws->ev[b], cx.st));
        if (prev_off >= 0) { /* while this chunk's DMA runs, drain the previous one */
            CU_DIE("to_host", cudaEventSynchronize(ws->ev[prev_b]));
            memcpy(d + prev_off, ws->pin + prev_b * SP_CUDA_PIN_HALF, (size_t)prev_n);
        }
        prev_off = off;
        prev_n = n;
        prev_b = b;
    }
    CU_DIE("to_host", cudaEventSynchronize(ws->ev[prev_b]));
    memcpy(d + prev_off, ws->pin + prev_b * SP_CUDA_PIN_HALF, (size_t)prev_n);
}

/* Backend memory to backend memory, ordered on the stream like an op. */
static void cu_copy(const sp_bk *bk, void *dst, const void *src, int64_t bytes) {
    SP_ASSERT(bytes >= 0);
    if (bytes == 0 || dst == src) return;
    ctx_need("copy");
    CU_DIE("copy", cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, cx.st));
}

static void cu_zero(const sp_bk *bk, void *p, int64_t bytes) {
    if (bytes <= 0) return;
    ctx_need("zero");
    CU_DIE("zero", cudaMemsetAsync(p, 0, (size_t)bytes, cx.st));
}

/* ------------------------------------------------------------------------ */
/* float32 ops                                                               */

/* Row-major C (m, n) = alpha·op(A)·op(B) + beta·C as the column-major
 * Cᵀ = op(B)ᵀ·op(A)ᵀ: the operands swap, the transposes stay. */
static void sgemm_rm(const char *op, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    BL_DIE(op, p_cublasSgemm_v2_64(cx.blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, B,
                              ldb, A, lda, &beta, C, ldc));
}

static void sgemm_rm_batched(const char *op, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                             const float *A, int64_t lda, int64_t sA, const float *B, int64_t ldb, int64_t sB,
                             float beta, float *C, int64_t ldc, int64_t sC, int64_t batch) {
    BL_DIE(op, p_cublasSgemmStridedBatched_64(cx.blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n,
                                            m, k, &alpha, B, ldb, sB, A, lda, sA, &beta, C, ldc, sC, batch));
}

static void cu_sgemm(const sp_bk *bk, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    SP_ASSERT(m >= 0 && n >= 0 && k >= 0);
    if (m == 0 || n == 0) return;
    ctx_need("sgemm");
    sgemm_rm("sgemm", ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void cu_add(const sp_bk *bk, float *y, const float *x, int64_t rows, int64_t n) {
    int64_t total;
    SP_ASSERT(rows >= 0 && n >= 0 && !sp_mul_i64(rows, n, &total));
    if (total == 0) return;
    ctx_need("add");
    k_add<<<grid_for(total), SP_CU_THREADS, 0, cx.st>>>(y, x, total);
    LAUNCHED("add");
}

/* Row-major C (rows, cols) = alpha·A + beta·C is column-major (cols, rows):
 * cuBLAS's geam with B = C in place (its documented in-place form: ldb ==
 * ldc, no transpose); with beta 0 it does not read B. */
static void cu_geadd(const sp_bk *bk, int64_t rows, int64_t cols, float alpha, const float *A, int64_t lda, float beta, float *C,
                     int64_t ldc) {
    SP_ASSERT(rows >= 0 && cols >= 0 && lda >= cols && ldc >= cols);
    if (rows == 0 || cols == 0) return;
    ctx_need("geadd");
    BL_DIE("geadd", p_cublasSgeam_64(cx.blas, CUBLAS_OP_N, CUBLAS_OP_N, cols, rows, &alpha, A, lda, &beta, C, ldc, C, ldc));
}

static void cu_add_bias(const sp_bk *bk, float *y, const float *b, int64_t rows, int64_t n) {
    int64_t total;
    SP_ASSERT(rows >= 0 && n >= 0 && !sp_mul_i64(rows, n, &total));
    if (total == 0) return;
    ctx_need("add_bias");
    k_add_bias<<<grid_for(total), SP_CU_THREADS, 0, cx.st>>>(y, b, rows, n);
    LAUNCHED("add_bias");
}

static void cu_norm(const sp_bk *bk, enum sp_bk_norm kind, const float *gamma, const float *beta, int64_t d, int64_t D, double eps,
                    float *x, int64_t rows) {
    SP_ASSERT(d >= 1 && D >= 1 && d <= D && rows >= 0);
    SP_ASSERT(kind == SP_BK_NORM_RMS ? !beta : kind == SP_BK_NORM_LAYER && d == D);
    if (rows == 0) return;
    ctx_need("norm");
    k_norm<<<rows_grid(rows), SP_CU_THREADS, 0, cx.st>>>((int)kind, gamma, beta, d, D, eps, x, rows);
    LAUNCHED("norm");
}

static void cu_rope(const sp_bk *bk, enum sp_bk_rope kind, float *x, int64_t T, int64_t ld, int64_t nh, int64_t hd, int64_t rot,
                    const float *cos_t, const float *sin_t) {
    SP_ASSERT(T >= 0 && nh >= 0 && hd >= 0 && rot >= 0 && rot % 2 == 0 && rot <= hd && ld >= nh * hd);
    int64_t total = T * nh * (rot / 2);
    if (total == 0) return;
    ctx_need("rope");
    k_rope<<<grid_for(total), SP_CU_THREADS, 0, cx.st>>>((int)kind, x, T, ld, nh, hd, rot, cos_t, sin_t);
    LAUNCHED("rope");
}

/* Scores of query head h in the workspace's buffer, one pass of kv heads at
 * a time: S_h (T, T) = scale·Q_h·K_gᵀ (full products: the masked half is
 * computed and then zeroed, which cuBLAS does faster than a triangle), the
 * softmax kernel masks and normalizes, then ctx_h (T, hd) = P_h·V_g. A pass
 * covers gb kv heads × the group's query heads r in [r0, r0 + rc); strided
 * batches run over the kv heads (query head h = g·group + r). */
static void cu_attention(const sp_bk *bk, sp_bk_ws *ws, const float *q, const float *k, const float *v, int64_t T, int64_t nh,
                         int64_t nkv, int64_t hd, float scale, int64_t window, float *ctx) {
    SP_ASSERT(ws && T >= 1 && T <= ws->in.T && nh >= 1 && nkv >= 1 && nh % nkv == 0 && hd >= 1);
    SP_ASSERT(ws->heads_cap >= 1 && ws->heads_cap <= 65535);
    ctx_need("attention");
    int64_t group = nh / nkv, qw = nh * hd, kw = nkv * hd, TT = T * T;
    /* capacity is heads_cap × in.T² floats; at this T it holds cap_T heads */
    int64_t cap_T = ws->heads_cap * (ws->in.T * ws->in.T / TT);
    int64_t rc = group < cap_T ? group : cap_T;          /* query heads of one kv head per pass */
    int64_t gb = rc == group ? cap_T / group : 1;        /* kv heads per pass */
    if (gb < 1) gb = 1;
    for (int64_t g0 = 0; g0 < nkv; g0 += gb) {
        int64_t ng = nkv - g0 < gb ? nkv - g0 : gb;
        for (int64_t r0 = 0; r0 < group; r0 += rc) {
            int64_t nr = group - r0 < rc ? group - r0 : rc;
            /* slot of (gg, r) in the buffer: gg·nr + (r − r0) */
            for (int64_t r = r0; r < r0 + nr; r++)
                sgemm_rm_batched("attention", 0, 1, T, T, hd, scale, q + (g0 * group + r) * hd, qw, group * hd,
                                 k + g0 * hd, kw, hd, 0.0f, ws->scores + (r - r0) * TT, T, nr * TT, ng);
            dim3 grid((unsigned)T, (unsigned)(ng * nr));
            k_softmax<<<grid, SP_CU_THREADS, 0, cx.st>>>(ws->scores, T, window);
            LAUNCHED("attention");
            for (int64_t r = r0; r < r0 + nr; r++)
                sgemm_rm_batched("attention", 0, 0, T, hd, T, 1.0f, ws->scores + (r - r0) * TT, T, nr * TT,
                                 v + g0 * hd, kw, hd, 0.0f, ctx + (g0 * group + r) * hd, qw, group * hd, ng);
        }
    }
}

/* cu_attention's passes for Tq query rows (the last Tq positions of Tk)
 * against Tk cached keys: S_h (Tq, Tk) = scale·Q_h·K_gᵀ, the offset softmax,
 * ctx_h (Tq, hd) = P_h·V_g. The buffer holds heads_cap × in.T² floats, so a
 * pass covers heads_cap·⌊in.T² / (Tq·Tk)⌋ heads. */
static void cu_attention_cached(const sp_bk *bk, sp_bk_ws *ws, const float *q, int64_t Tq, const float *k, const float *v, int64_t Tk,
                                int64_t nh, int64_t nkv, int64_t hd, float scale, int64_t window, float *ctx) {
    SP_ASSERT(ws && Tq >= 1 && Tq <= Tk && Tk <= ws->in.T && nh >= 1 && nkv >= 1 && nh % nkv == 0 && hd >= 1);
    SP_ASSERT(ws->heads_cap >= 1 && ws->heads_cap <= 65535);
    ctx_need("attention_cached");
    int64_t group = nh / nkv, qw = nh * hd, kw = nkv * hd, QK = Tq * Tk;
    int64_t cap_T = ws->heads_cap * (ws->in.T * ws->in.T / QK); /* heads whose (Tq, Tk) scores fit */
    int64_t rc = group < cap_T ? group : cap_T;                   /* query heads of one kv head per pass */
    int64_t gb = rc == group ? cap_T / group : 1;                 /* kv heads per pass */
    if (gb < 1) gb = 1;
    for (int64_t g0 = 0; g0 < nkv; g0 += gb) {
        int64_t ng = nkv - g0 < gb ? nkv - g0 : gb;
        for (int64_t r0 = 0; r0 < group; r0 += rc) {
            int64_t nr = group - r0 < rc ? group - r0 : rc;
            /* slot of (gg, r) in the buffer: gg·nr + (r − r0), each (Tq, Tk) */
            for (int64_t r = r0; r < r0 + nr; r++)
                sgemm_rm_batched("attention_cached", 0, 1, Tq, Tk, hd, scale, q + (g0 * group + r) * hd, qw, group * hd,
                                 k + g0 * hd, kw, hd, 0.0f, ws->scores + (r - r0) * QK, Tk, nr * QK, ng);
            dim3 grid((unsigned)Tq, (unsigned)(ng * nr));
            k_softmax_cached<<<grid, SP_CU_THREADS, 0, cx.st>>>(ws->scores, Tq, Tk, window);
            LAUNCHED("attention_cached");
            for (int64_t r = r0; r < r0 + nr; r++)
                sgemm_rm_batched("attention_cached", 0, 0, Tq, hd, Tk, 1.0f, ws->scores + (r - r0) * QK, Tk, nr * QK,
                                 v + g0 * hd, kw, hd, 0.0f, ctx + (g0 * group + r) * hd, qw, group * hd, ng);
        }
    }
}

static void cu_act(const sp_bk *bk, enum sp_bk_act kind, float *gate, const float *up, int64_t n) {
    SP_ASSERT(n >= 0);
    if (n == 0) return;
    ctx_need("act");
    k_act<<<grid_for(n), SP_CU_THREADS, 0, cx.st>>>((int)kind, gate, up, n);
    LAUNCHED("act");
}

static double cu_nll(const sp_bk *bk, const float *logits, int64_t T, int64_t V, const int32_t *targets, double acc) {
    SP_ASSERT(T >= 0 && V >= 1);
    if (T < 2) return acc;
    ctx_need("nll");
    int64_t rows = T - 1;
    int32_t *tgt;
    double *out_d, *out_h;
    if (cx.ws && cx.ws->in.T >= T) {
        tgt = cx.ws->tgt;
        out_d = cx.ws->nll_d;
        out_h = cx.ws->nll_h;
    } else { /* no workspace covers T (tests): a scratch kept for later calls */
        if (cx.f_cap < T) {
            cudaFree(cx.f_tgt);
            cudaFree(cx.f_nll_d);
            free(cx.f_nll_h);
            cx.f_tgt = NULL;
            cx.f_nll_d = NULL;
            cx.f_cap = 0;
            CU_DIE("nll", cudaMalloc((void **)&cx.f_tgt, (size_t)T * sizeof(int32_t)));
            CU_DIE("nll", cudaMalloc((void **)&cx.f_nll_d, (size_t)T * sizeof(double)));
            cx.f_nll_h = (double *)malloc((size_t)T * sizeof(double));
            if (!cx.f_nll_h) cu_fatal("nll", "malloc", "out of memory");
            cx.f_cap = T;
        }
        tgt = cx.f_tgt;
        out_d = cx.f_nll_d;
        out_h = cx.f_nll_h;
    }
    /* tgt[t] = targets[t + 1], the token predicted at row t */
    CU_DIE("nll", cudaMemcpyAsync(tgt, targets + 1, (size_t)rows * sizeof(int32_t), cudaMemcpyHostToDevice, cx.st));
    k_nll<<<rows_grid(rows), SP_CU_THREADS, 0, cx.st>>>(logits, rows, V, tgt, out_d);
    LAUNCHED("nll");
    CU_DIE("nll", cudaMemcpyAsync(out_h, out_d, (size_t)rows * sizeof(double), cudaMemcpyDeviceToHost, cx.st));
    CU_DIE("nll", cudaStreamSynchronize(cx.st));
    double s = acc;
    for (int64_t t = 0; t < rows; t++) s += out_h[t]; /* into acc, one row at a time in row order, as the CPU */
    return s;
}

/* ------------------------------------------------------------------------ */
/* float64 ops                                                               */

static int cu_cov_add(const sp_bk *bk, sp_bk_ws *ws, double *H, int64_t D, const float *X, int64_t rows, int64_t ld, int64_t row0) {
    SP_ASSERT(ws && D >= 1 && D <= ws->in.D && ld >= D && rows >= 0 && ws->in.cov_rows >= 1);
    if (rows == 0) return 0;
    SP_TRY(ctx_init());
    int64_t total;
    if (sp_mul_i64(rows, D, &total)) return sp_fail(SP_EX_SOFTWARE, "cuda backend: cov_add: rows × D overflows");
    /* The first non-finite entry in row-major order: the one the CPU names. */
    unsigned long long bad = 0;
    CU_RET("cov_add", cudaMemsetAsync(cx.d_bad, 0xff, sizeof *cx.d_bad, cx.st));
    k_find_nonfinite_f32<<<grid_for(total), SP_CU_THREADS, 0, cx.st>>>(X, rows, D, ld, cx.d_bad);
    CU_RET("cov_add", cudaGetLastError());
    CU_RET("cov_add", cudaMemcpyAsync(&bad, cx.d_bad, sizeof bad, cudaMemcpyDeviceToHost, cx.st));
    CU_RET("cov_add", cudaStreamSynchronize(cx.st));
    if (bad != ~0ull)
        return sp_fail(SP_EX_DATAERR, "non-finite activation (NaN or Inf) at token %lld, component %lld",
                       (long long)(row0 + (int64_t)(bad / (unsigned long long)D)),
                       (long long)(bad % (unsigned long long)D));
    const double one = 1.0;
    for (int64_t r0 = 0; r0 < rows; r0 += ws->in.cov_rows) {
        int64_t nr = rows - r0 < ws->in.cov_rows ? rows - r0 : ws->in.cov_rows;
        k_widen_rows<<<grid_for(nr * D), SP_CU_THREADS, 0, cx.st>>>(X + r0 * ld, ld, nr, D, ws->xd);
        CU_RET("cov_add", cudaGetLastError());
        /* column-major: H_lower (D, D) += Xd (D, nr) · Xdᵀ, i.e. row-major upper += XᵀX */
        BL_RET("cov_add", p_cublasDsyrk_v2_64(cx.blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, D, nr, &one, ws->xd, D, &one, H, D));
    }
    return 0;
}

static int cu_eigh(const sp_bk *bk, sp_bk_ws *ws, const double *H, int64_t D, double damp, double *Q, double *evals) {
    SP_ASSERT(ws && D >= 1 && D <= ws->in.D);
    SP_TRY(ctx_init());
    int64_t DD = D * D;
    unsigned long long bad = 0;
    double tr = 0;
    CU_RET("eigh", cudaMemsetAsync(cx.d_bad, 0xff, sizeof *cx.d_bad, cx.st));
    k_find_nonfinite_upper<<<grid_for(DD), SP_CU_THREADS, 0, cx.st>>>(H, D, cx.d_bad);
    CU_RET("eigh", cudaGetLastError());
    k_trace_seq<<<1, 1, 0, cx.st>>>(H, D, cx.d_tr);
    CU_RET("eigh", cudaGetLastError());
    CU_RET("eigh", cudaMemcpyAsync(&bad, cx.d_bad, sizeof bad, cudaMemcpyDeviceToHost, cx.st));
    CU_RET("eigh", cudaMemcpyAsync(&tr, cx.d_tr, sizeof tr, cudaMemcpyDeviceToHost, cx.st));
    CU_RET("eigh", cudaStreamSynchronize(cx.st));
    double mean_diag = tr / (double)D;
    if (bad != ~0ull)
        return sp_fail(SP_EX_DATAERR, "second moment holds a non-finite value (at %lld, %lld)",
                       (long long)(bad / (unsigned long long)D), (long long)(bad % (unsigned long long)D));
    if (!isfinite(mean_diag)) return sp_fail(SP_EX_DATAERR, "second moment holds a non-finite value");
    if (mean_diag == 0)
        return sp_fail(SP_EX_DATAERR, "second moment has a zero mean diagonal (all activations are zero)");
    double delta = damp * mean_diag;
    int64_t need_dev = 0, need_host = 0;
    if (syevd_query(cx.sol, cx.sp, D, ws->w, &need_dev, &need_host) != 0 || need_dev > ws->sol_dev_bytes ||
        need_host > ws->sol_host_bytes)
        return sp_fail(SP_EX_SOFTWARE, "cuda backend: eigh: cusolverDnXsyevd at D %lld needs %lld + %lld bytes, the "
                       "workspace has %lld + %lld", (long long)D, (long long)need_dev, (long long)need_host,
                       (long long)ws->sol_dev_bytes, (long long)ws->sol_host_bytes);
    k_damped_copy<<<grid_for(DD), SP_CU_THREADS, 0, cx.st>>>(H, D, delta, ws->A);
    CU_RET("eigh", cudaGetLastError());
    SO_RET("eigh", p_cusolverDnXsyevd(cx.sol, cx.sp, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, D, CUDA_R_64F, ws->A, D,
                                    CUDA_R_64F, ws->w, CUDA_R_64F, ws->sol_dev, (size_t)need_dev, ws->sol_host,
                                    (size_t)need_host, cx.d_info));
    int info = 0;
    CU_RET("eigh", cudaMemcpyAsync(&info, cx.d_info, sizeof info, cudaMemcpyDeviceToHost, cx.st));
    CU_RET("eigh", cudaStreamSynchronize(cx.st));
    if (info != 0) return sp_fail(SP_EX_DATAERR, "eigendecomposition failed (cusolverDnXsyevd info=%d)", info);
    k_sign<<<(unsigned)D, SP_CU_THREADS, 0, cx.st>>>(ws->A, D, ws->sgn);
    CU_RET("eigh", cudaGetLastError());
    dim3 tiles((unsigned)((D + SP_TILE - 1) / SP_TILE), (unsigned)((D + SP_TILE - 1) / SP_TILE)), th(SP_TILE, 8);
    k_eig_out<<<tiles, th, 0, cx.st>>>(ws->A, ws->sgn, ws->w, D, Q, evals);
    CU_RET("eigh", cudaGetLastError());
    return 0;
}

static void cu_rot_rows(const sp_bk *bk, sp_bk_ws *ws, float *W, int64_t rows, int64_t D, const float *gamma, const double *Q, int64_t k) {
    SP_ASSERT(ws && D >= 1 && D <= ws->in.D && k >= 1 && k <= D && rows >= 0 && ws->in.rot_block >= 1);
    if (rows == 0) return;
    ctx_need("rot_rows");
    const double one = 1.0, zero = 0.0;
    int64_t rb = ws->in.rot_block;
    /* Block b reads W rows [r0, r0 + nr) at r0·D.. and writes (nr, k) at
     * r0·k..; stream order and r1·k <= r1·D keep later blocks' inputs intact. */
    for (int64_t r0 = 0; r0 < rows; r0 += rb) {
        int64_t nr = rows - r0 < rb ? rows - r0 : rb;
        k_widen_scaled<<<grid_for(nr * D), SP_CU_THREADS, 0, cx.st>>>(W + r0 * D, nr, D, gamma, ws->rw);
        LAUNCHED("rot_rows");
        /* column-major Od (k, nr) = Q[:, :k]ᵀ (k, D; Q's memory, ld D) · Wd (D, nr) */
        BL_DIE("rot_rows", p_cublasDgemm_v2_64(cx.blas, CUBLAS_OP_N, CUBLAS_OP_N, k, nr, D, &one, Q, D, ws->rw, D, &zero,
                                          ws->ro, k));
        k_narrow<<<grid_for(nr * k), SP_CU_THREADS, 0, cx.st>>>(ws->ro, nr, k, W + r0 * k, k);
        LAUNCHED("rot_rows");
    }
}

static void cu_rot_cols(const sp_bk *bk, sp_bk_ws *ws, const double *Q, int64_t D, int64_t k, float *W, int64_t cols) {
    SP_ASSERT(ws && D >= 1 && D <= ws->in.D && k >= 1 && k <= D && cols >= 0 && ws->in.rot_block >= 1);
    if (cols == 0) return;
    ctx_need("rot_cols");
    const double one = 1.0, zero = 0.0;
    int64_t cb = ws->in.rot_block;
    for (int64_t c0 = 0; c0 < cols; c0 += cb) {
        int64_t nc = cols - c0 < cb ? cols - c0 : cb;
        k_widen_cols<<<grid_for(D * nc), SP_CU_THREADS, 0, cx.st>>>(W, D, cols, c0, nc, ws->rw);
        LAUNCHED("rot_cols");
        /* column-major Od (nc, k) = Wd (nc, D) · Q[:, :k] (op T of Q's memory's (k, D)) */
        BL_DIE("rot_cols", p_cublasDgemm_v2_64(cx.blas, CUBLAS_OP_N, CUBLAS_OP_T, nc, k, D, &one, ws->rw, nc, Q, D, &zero,
                                          ws->ro, nc));
        k_narrow<<<grid_for(k * nc), SP_CU_THREADS, 0, cx.st>>>(ws->ro, k, nc, W + c0, cols);
        LAUNCHED("rot_cols");
    }
}

static void cu_basis_product(const sp_bk *bk, const double *A, int64_t a, const double *B, int64_t b, int64_t D, double *scratch,
                             float *C) {
    SP_ASSERT(a >= 0 && b >= 0 && a <= D && b <= D);
    if (a == 0 || b == 0) return;
    ctx_need("basis_product");
    const double one = 1.0, zero = 0.0;
    /* column-major scratch (b, a) = B[:, :b]ᵀ · A[:, :a], i.e. row-major (a, b) = A[:, :a]ᵀ·B[:, :b] */
    BL_DIE("basis_product",
           p_cublasDgemm_v2_64(cx.blas, CUBLAS_OP_N, CUBLAS_OP_T, b, a, D, &one, B, D, A, D, &zero, scratch, b));
    k_narrow<<<grid_for(a * b), SP_CU_THREADS, 0, cx.st>>>(scratch, a, b, C, b);
    LAUNCHED("basis_product");
}

static void cu_basis_f32(const sp_bk *bk, const double *Q, int64_t D, int64_t k, float *Qf, float *Qt) {
    SP_ASSERT(D >= 1 && k >= 0 && k <= D);
    if (k == 0 || (!Qf && !Qt)) return;
    ctx_need("basis_f32");
    k_basis_f32<<<grid_for(D * k), SP_CU_THREADS, 0, cx.st>>>(Q, D, k, Qf, Qt);
    LAUNCHED("basis_f32");
}

/* ------------------------------------------------------------------------ */

/* The CUDA runtime keeps one context per process and device: every
 * instance's ctx is that one context (cx), and releasing an instance frees
 * only its table. */
static void cu_release(sp_bk *bk) { free(bk); }

static const sp_bk cu_table = {
    .name = "cuda",
    .precision = "fp32",
    .host_shared = 0,
    .process_bytes = 0, /* not measured on a device yet */
    .ctx = NULL,
    .release = cu_release,
    .set_threads = cu_set_threads,
    .identity = cu_identity,
    .plan_bytes = cu_plan_bytes,
    .device_bytes_free = cu_device_bytes_free,
    .ws_init = cu_ws_init,
    .ws_free = cu_ws_free,
    .alloc = cu_alloc,
    .free = cu_free,
    .to_dev = cu_to_dev,
    .to_host = cu_to_host,
    .copy = cu_copy,
    .zero = cu_zero,
    .hold = NULL, /* nothing derived from B is kept: cuBLAS reads fp32 operands as they are */
    .sgemm = cu_sgemm,
    .add = cu_add,
    .geadd = cu_geadd,
    .add_bias = cu_add_bias,
    .norm = cu_norm,
    .rope = cu_rope,
    .attention = cu_attention,
    .attention_cached = cu_attention_cached,
    .act = cu_act,
    .nll = cu_nll,
    .cov_add = cu_cov_add,
    .eigh = cu_eigh,
    .rot_rows = cu_rot_rows,
    .rot_cols = cu_rot_cols,
    .basis_product = cu_basis_product,
    .basis_f32 = cu_basis_f32,
};

extern "C" int sp_bk_cuda_open(sp_bk **out) {
    *out = NULL;
    sp_bk *bk;
    SP_TRY(sp_alloc((void **)&bk, (int64_t)sizeof *bk, 1, "cuda backend"));
    *bk = cu_table;
    bk->precision = env_flag("SLICEPIPE_CUDA_TF32", 0) ? "tf32" : "fp32";
    bk->ctx = &cx;
    *out = bk;
    return 0;
}

