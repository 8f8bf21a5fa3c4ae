/* gradprobe._fused: single-pass reductions of many CPU arrays in one call.

Each function reads every element of every array exactly once, with the GIL released, and writes
float64 results. Arrays are given as raw addresses (contiguous, C order) so that one call covers a
whole step's tensors without a Python round trip per tensor; the Python side (gradprobe.torch._native)
checks dtypes, contiguity and sizes before it calls, and falls back to numpy/torch when this module
is not built.

Every sum and sum of squares is exact to float64 rounding for any finite float32 input: each
element is converted to float64 (a float32 square is exact in float64: 48 significant bits, no
overflow below 3.4e38 squared, no underflow above 1e-45 squared) and added into float64
accumulators, in several independent lanes. Only counts (exact below 2^24) and maxima (exact in
any dtype) run in the arrays' own dtype. Loops carry
OpenMP SIMD pragmas (compiled with -fopenmp-simd: vectorised, no OpenMP runtime). The passes over
many arrays may split a large pass across a few POSIX threads (see run_pass); nothing else starts a
thread.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#if !defined(_WIN32)
#include <pthread.h>
#define HAVE_THREADS 1 /* elsewhere (Windows) every pass runs on the calling thread */
#endif
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>
#include <time.h>

#define F32 0
#define F64 1

/* x86-64: AVX-512 and AVX2 copies of each kernel beside the baseline one, chosen at load time */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define KERNEL __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KERNEL
#endif

/* Every sum runs in LANES independent accumulators (a few vector registers), combined at the end:
   with one accumulator each addition waits for the one before it (4 cycles of latency per vector),
   which made the passes 2-3x slower than the loads they do. */
#define LANES 16

/* counts run in the arrays' dtype over blocks of this many elements (exact: far below 2^24),
   each block's count then added into float64 */
#define BLOCK 256

/* moments: per array sum, sum of squares, max |x|, count of exact zeros -> out[4*k .. 4*k+3].
   Sums in float64; the max and the count are exact in the arrays' own dtype (the count over
   blocks of BLOCK elements, each block's count added in float64: a count in the data's own
   vector width, about a fifth faster than int64 lanes). */
#define MOMENT(T, ABS, j)                                                                  \
    {                                                                                      \
        T a = ABS(v);                                                                      \
        double d = (double)v;                                                              \
        s[j] += d;                                                                         \
        q[j] += d * d;                                                                     \
        m[j] = a > m[j] ? a : m[j];                                                        \
        zb[j] += v == (T)0 ? (T)1 : (T)0;                                                  \
    }
#define MOMENTS_BODY(T, ABS)                                                               \
    {                                                                                      \
        const T *x = (const T *)ptr;                                                       \
        double s[LANES] = {0}, q[LANES] = {0}, z[LANES] = {0};                             \
        T m[LANES] = {0};                                                                  \
        for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {                                        \
            const int64_t e0 = b0 + BLOCK < n ? b0 + BLOCK : n;                            \
            T zb[LANES] = {0};                                                             \
            int64_t i = b0;                                                                \
            for (; i + LANES <= e0; i += LANES) {                                          \
                _Pragma("omp simd")                                                        \
                for (int j = 0; j < LANES; j++) {                                          \
                    T v = x[i + j];                                                        \
                    MOMENT(T, ABS, j)                                                      \
                }                                                                          \
            }                                                                              \
            for (; i < e0; i++) { /* the last few elements, all into lane 0 */             \
                T v = x[i];                                                                \
                MOMENT(T, ABS, 0)                                                          \
            }                                                                              \
            _Pragma("omp simd")                                                            \
            for (int j = 0; j < LANES; j++) z[j] += (double)zb[j];                         \
        }                                                                                  \
        double S = 0.0, Q = 0.0, M = 0.0, Z = 0.0;                                         \
        for (int j = 0; j < LANES; j++) {                                                  \
            S += s[j];                                                                     \
            Q += q[j];                                                                     \
            M = (double)m[j] > M ? (double)m[j] : M;                                       \
            Z += z[j];                                                                     \
        }                                                                                  \
        o[0] = S; o[1] = Q; o[2] = M; o[3] = Z;                                            \
    }

KERNEL static void moments_one(const void *ptr, int64_t n, int dtype, double *o)
{
    if (dtype == F32) MOMENTS_BODY(float, fabsf) else MOMENTS_BODY(double, fabs)
}

/* sum of squares only, in SQ_LANES float64 lanes: more lanes than the other passes, since this
   loop has nothing else to do while an addition waits for the one before it in its lane (four
   float64 vectors of AVX-512, eight of AVX2, in flight). For float32 arrays the conversions to
   float64 bound the pass: about 4 elements a cycle, 1.4-1.7x the time float32 lanes took on a
   262,144-element array in cache (AMD EPYC, AVX-512); out of cache both wait on memory alike. */
#define SQ_LANES 32
#define SUMSQ_BODY(T)                                                                      \
    {                                                                                      \
        const T *x = (const T *)ptr;                                                       \
        for (; i + SQ_LANES <= n; i += SQ_LANES) {                                         \
            _Pragma("omp simd")                                                            \
            for (int j = 0; j < SQ_LANES; j++) {                                           \
                double d = (double)x[i + j];                                               \
                q[j] += d * d;                                                             \
            }                                                                              \
        }                                                                                  \
        for (; i < n; i++) q[0] += (double)x[i] * (double)x[i];                            \
    }

KERNEL static double sumsq_one(const void *ptr, int64_t n, int dtype)
{
    double q[SQ_LANES] = {0};
    int64_t i = 0;
    if (dtype == F32) SUMSQ_BODY(float) else SUMSQ_BODY(double)
    double Q = 0.0;
    for (int j = 0; j < SQ_LANES; j++) Q += q[j];
    return Q;
}

/* sum of squared differences of two arrays of one dtype (float64 differences and sums) */
#define SQDIST_BODY(T)                                                                     \
    {                                                                                      \
        const T *x = (const T *)pa, *y = (const T *)pb;                                    \
        double q[LANES] = {0};                                                             \
        int64_t i = 0;                                                                     \
        for (; i + LANES <= n; i += LANES) {                                               \
            _Pragma("omp simd")                                                            \
            for (int j = 0; j < LANES; j++) {                                              \
                double d = (double)x[i + j] - (double)y[i + j];                            \
                q[j] += d * d;                                                             \
            }                                                                              \
        }                                                                                  \
        for (; i < n; i++) {                                                               \
            double d = (double)x[i] - (double)y[i];                                        \
            q[0] += d * d;                                                                 \
        }                                                                                  \
        double Q = 0.0;                                                                    \
        for (int j = 0; j < LANES; j++) Q += q[j];                                         \
        return Q;                                                                          \
    }

KERNEL static double sqdist_one(const void *pa, const void *pb, int64_t n, int dtype)
{
    if (dtype == F32) SQDIST_BODY(float) else SQDIST_BODY(double)
}

/* outputs: sum, sum of squares, count outside [low, high]; and, when unit_max is given, the max
   over the other dimensions of each unit of an (outer, units, inner) array (unit_max has the
   arrays' own dtype). The sum and the sum of squares are taken in float64 (a mean near zero
   cancels; squares of float32 values reach 1e-90 and 1e77); the count runs in the arrays' dtype
   over short runs (at most BLOCK elements), each run's count added in float64. Each run goes
   LANES elements at a time into LANES accumulators, which last the whole array (no sum across
   lanes until the end). */
/* element i of a run into lane j */
#define ELEMENT(T, base, MAXV, COUNT)                                                      \
    {                                                                                      \
        T v = (base)[i];                                                                   \
        double d = (double)v;                                                              \
        sl[j] += d;                                                                        \
        ql[j] += d * d;                                                                    \
        COUNT                                                                              \
        MAXV                                                                               \
    }
#define RUN(T, base, len, MAXV, COUNT)                                                     \
    {                                                                                      \
        for (int64_t b0 = 0; b0 < (len); b0 += BLOCK) {                                    \
            int64_t e0 = b0 + BLOCK < (len) ? b0 + BLOCK : (len);                          \
            T cb[LANES] = {0};                                                             \
            int64_t i0 = b0;                                                               \
            for (; i0 + LANES <= e0; i0 += LANES) {                                        \
                _Pragma("omp simd")                                                        \
                for (int j = 0; j < LANES; j++) {                                          \
                    const int64_t i = i0 + j;                                              \
                    ELEMENT(T, base, MAXV, COUNT)                                          \
                }                                                                          \
            }                                                                              \
            for (; i0 < e0; i0++) { /* the last few elements, all into lane 0 */           \
                const int64_t i = i0, j = 0;                                               \
                ELEMENT(T, base, MAXV, COUNT)                                              \
            }                                                                              \
            _Pragma("omp simd")                                                            \
            for (int j = 0; j < LANES; j++) cl[j] += (double)cb[j];                       \
        }                                                                                  \
    }
#define IN_BAND(T) cb[j] += (v < lo || v > hi) ? (T)1 : (T)0;
/* no band (low = -inf, high = +inf): nothing can lie outside it, not even NaN or inf, so the
   comparisons, a third of the loop's time, are left out and the count stays 0 */
#define RUNS(T, base, len, MAXV)                                                           \
    if (banded) {                                                                          \
        RUN(T, base, len, MAXV, IN_BAND(T))                                                \
    } else {                                                                               \
        RUN(T, base, len, MAXV, )                                                          \
    }

#define OUTPUT_BODY(T)                                                                     \
    {                                                                                      \
        const T *x = (const T *)ptr;                                                       \
        T *umax = (T *)unit_max;                                                           \
        const T lo = (T)low, hi = (T)high;                                                 \
        double sl[LANES] = {0}, ql[LANES] = {0}, cl[LANES] = {0};                          \
        int64_t n = outer * units * inner;                                                 \
        const int banded = !(isinf(low) && low < 0 && isinf(high) && high > 0);            \
        if (umax == NULL) {                                                                \
            RUNS(T, x, n, )                                                                \
        } else if (inner == 1) {                                                           \
            for (int64_t u = 0; u < units; u++) umax[u] = -INFINITY;                       \
            for (int64_t r = 0; r < outer; r++) {                                          \
                const T *row = x + r * units;                                              \
                RUNS(T, row, units, umax[i] = v > umax[i] ? v : umax[i];)                  \
            }                                                                              \
        } else {                                                                           \
            for (int64_t u = 0; u < units; u++) umax[u] = -INFINITY;                       \
            for (int64_t r = 0; r < outer; r++) {                                          \
                for (int64_t u = 0; u < units; u++) {                                      \
                    const T *blk = x + (r * units + u) * inner;                            \
                    T mx[LANES];                                                           \
                    for (int j = 0; j < LANES; j++) mx[j] = umax[u];                       \
                    RUNS(T, blk, inner, mx[j] = v > mx[j] ? v : mx[j];)                    \
                    for (int j = 0; j < LANES; j++) umax[u] = mx[j] > umax[u] ? mx[j] : umax[u]; \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        double s = 0.0, q = 0.0, c = 0.0;                                                  \
        for (int j = 0; j < LANES; j++) {                                                  \
            s += sl[j]; q += ql[j]; c += cl[j];                                            \
        }                                                                                  \
        o[0] = s; o[1] = q; o[2] = (double)n; o[3] = c;                                    \
    }

KERNEL static void output_one(const void *ptr, int64_t outer, int64_t units, int64_t inner,
                              int dtype, double low, double high, void *unit_max, double *o)
{
    if (dtype == F32) OUTPUT_BODY(float) else OUTPUT_BODY(double)
}

/* Arguments shared by the entry points: the address of an int64 array of data addresses, the
   address of an int64 array of element counts, the number of arrays, the dtype code, and the
   address of the float64 output. */

/* A pass over many arrays, each reduced into its own row of o: width 4 for moments, 1 for sums of
   squares, or 1 for squared differences with the arrays at b.

   A large pass (SPLIT_MIN elements or more) is cut into `threads` equal ranges of the arrays'
   elements laid end to end, each read by its own thread into its own rows, which are then
   merged (sums added, maxima taken). These passes run in the optimizer's hooks, between the
   training framework's parallel ops, and read memory no longer in cache, where one core's loads
   reach about half of what two reach (2-core VM, 13M float32 elements alone: 5.9-6.7 ms with one
   thread, 3.1-3.6 ms with two). Inside a training step the gain is smaller, because torch's
   OpenMP workers keep spinning on the other core for a while after each op: the pre-hook of a
   50x512 MLP (its gradients' moments and weights' norms) took 13.3 ms with one thread and 11.1 ms
   with two (8.8 ms with two when OMP_WAIT_POLICY=PASSIVE stops the spinning). */
#define SPLIT_MIN (1 << 20)
#define MAX_THREADS 8

typedef struct {
    const int64_t *a, *b, *n;
    Py_ssize_t k;
    int dtype, width;
    int64_t from, to; /* the range of elements, counted over all arrays end to end */
    double *o;        /* k * width results, zeroed before the pass */
} pass_job;

/* one array's partial results added into its row: sums added, the max |x| of moments taken */
static void merge_row(double *o, const double *r, int width)
{
    if (width == 4) {
        o[0] += r[0]; o[1] += r[1]; o[3] += r[3];
        o[2] = r[2] > o[2] ? r[2] : o[2];
    } else {
        o[0] += r[0];
    }
}

static void pass_range(pass_job *J)
{
    const size_t el = J->dtype == F32 ? sizeof(float) : sizeof(double);
    int64_t start = 0;
    for (Py_ssize_t j = 0; j < J->k && start < J->to; j++) {
        const int64_t lo = start, hi = start + J->n[j];
        start = hi;
        if (hi <= J->from) continue;
        const int64_t s = (J->from > lo ? J->from : lo) - lo, e = (J->to < hi ? J->to : hi) - lo;
        const char *x = (const char *)(uintptr_t)J->a[j] + s * el;
        double r[4];
        if (J->width == 4)
            moments_one(x, e - s, J->dtype, r);
        else if (J->b != NULL)
            r[0] = sqdist_one(x, (const char *)(uintptr_t)J->b[j] + s * el, e - s, J->dtype);
        else
            r[0] = sumsq_one(x, e - s, J->dtype);
        merge_row(J->o + J->width * j, r, J->width);
    }
}

#ifdef HAVE_THREADS
static void *pass_thread(void *job)
{
    pass_range((pass_job *)job);
    return NULL;
}
#endif

static void run_pass(pass_job *whole, int threads)
{
    int64_t total = 0;
    for (Py_ssize_t j = 0; j < whole->k; j++) total += whole->n[j];
    const size_t rows = (size_t)whole->k * (size_t)whole->width;
    memset(whole->o, 0, rows * sizeof(double));
    whole->from = 0;
    whole->to = total;
#ifdef HAVE_THREADS
    if (threads > MAX_THREADS) threads = MAX_THREADS;
#else
    threads = 1;
#endif
    if (threads < 2 || total < SPLIT_MIN) {
        pass_range(whole);
        return;
    }
#ifdef HAVE_THREADS
    pass_job jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    double *parts = (double *)calloc((size_t)(threads - 1) * rows, sizeof(double));
    if (parts == NULL) {
        pass_range(whole);
        return;
    }
    for (int t = 0; t < threads; t++) {
        jobs[t] = *whole;
        jobs[t].from = total / threads * t;
        jobs[t].to = t == threads - 1 ? total : total / threads * (t + 1);
        jobs[t].o = t == 0 ? whole->o : parts + (size_t)(t - 1) * rows;
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&ids[t], NULL, pass_thread, &jobs[t]) == 0;
    pass_range(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            pass_range(&jobs[t]); /* no thread to be had: this caller reads that range too */
    }
    for (int t = 1; t < threads; t++)
        for (Py_ssize_t j = 0; j < whole->k; j++)
            merge_row(whole->o + whole->width * j, jobs[t].o + whole->width * j, whole->width);
    free(parts);
#endif
}

static PyObject *fused_pass(PyObject *args, int width, int pairs)
{
    unsigned long long addrs, sizes, out, second = 0;
    Py_ssize_t k;
    int dtype, threads = 1;
    if (pairs ? !PyArg_ParseTuple(args, "KKKniK|i", &addrs, &second, &sizes, &k, &dtype, &out,
                                  &threads)
              : !PyArg_ParseTuple(args, "KKniK|i", &addrs, &sizes, &k, &dtype, &out, &threads))
        return NULL;
    pass_job job = {
        .a = (const int64_t *)(uintptr_t)addrs,
        .b = (const int64_t *)(uintptr_t)second,
        .n = (const int64_t *)(uintptr_t)sizes,
        .k = k,
        .dtype = dtype,
        .width = width,
        .o = (double *)(uintptr_t)out,
    };
    Py_BEGIN_ALLOW_THREADS
    run_pass(&job, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *fused_moments(PyObject *self, PyObject *args) { return fused_pass(args, 4, 0); }

static PyObject *fused_sumsq(PyObject *self, PyObject *args) { return fused_pass(args, 1, 0); }

static PyObject *fused_sqdist(PyObject *self, PyObject *args) { return fused_pass(args, 1, 1); }

/* outputs(addrs, k, outer, units, inner, dtype, low, high, out, unit_max): all k arrays share one
   (outer, units, inner) shape; unit_max is the address of a (k, units) array of the arrays' dtype, or 0. */
static PyObject *fused_outputs(PyObject *self, PyObject *args)
{
    unsigned long long addrs, out, umax;
    Py_ssize_t k;
    long long outer, units, inner;
    int dtype;
    double low, high;
    if (!PyArg_ParseTuple(args, "KnLLLiddKK", &addrs, &k, &outer, &units, &inner, &dtype, &low,
                          &high, &out, &umax))
        return NULL;
    const int64_t *a = (const int64_t *)(uintptr_t)addrs;
    double *o = (double *)(uintptr_t)out;
    char *um = (char *)(uintptr_t)umax;
    size_t row = (size_t)units * (dtype == F32 ? sizeof(float) : sizeof(double));
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < k; j++)
        output_one((const void *)(uintptr_t)a[j], outer, units, inner, dtype, low, high,
                   um ? um + j * row : NULL, o + 4 * j);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* The one-array forms, for an array still in cache right after it was produced; they return
   Python floats instead of writing an output array. */
static PyObject *fused_sumsq1(PyObject *self, PyObject *args)
{
    unsigned long long addr;
    long long n;
    int dtype;
    if (!PyArg_ParseTuple(args, "KLi", &addr, &n, &dtype)) return NULL;
    double q;
    Py_BEGIN_ALLOW_THREADS
    q = sumsq_one((const void *)(uintptr_t)addr, n, dtype);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(q);
}

static PyObject *fused_output1(PyObject *self, PyObject *args)
{
    unsigned long long addr, umax;
    long long outer, units, inner;
    int dtype;
    double low, high, o[4];
    if (!PyArg_ParseTuple(args, "KLLLiddK", &addr, &outer, &units, &inner, &dtype, &low, &high,
                          &umax))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    output_one((const void *)(uintptr_t)addr, outer, units, inner, dtype, low, high,
               (void *)(uintptr_t)umax, o);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(dddd)", o[0], o[1], o[2], o[3]);
}

/* Ticker: the optimizer step hooks of a monitor, for steps that record nothing.

A monitor knows ahead which steps record nothing (its schedule is a pure function of the step).
For those, and while the next step also records nothing, nothing needs Python: the pre-hook
returns at once, and the post-hook counts the step, reads the clock the budget times steps with
and logs (step, clock) for the budget's next decision. Any other step goes to the Python hooks
(``pre``, ``post``), which take the log (``take()``) and set ``quiet_until`` again. On a 0.4 ms
step the Python hooks and bookkeeping of a step recording nothing cost about 4% of it. */
typedef struct {
    PyObject_HEAD
    long long step;        /* steps ended: the index of the step under way */
    long long completed;   /* post-hook calls: steps the optimizer ran */
    long long quiet_until; /* steps below it record nothing (a step s ends here if s + 1 < it) */
    int clock; /* 0: the thread's CPU time, 1: monotonic, 2: no clock (0.0); -1: always Python */
    Py_ssize_t n;
    double log[2 * 256];   /* (step, clock) of the steps ended here since the last take() */
    PyObject *pre, *post;  /* the Python hooks: f(optimizer, args, kwargs) */
} Ticker;

static int ticker_init(Ticker *self, PyObject *args, PyObject *kw)
{
    PyObject *pre, *post;
    int clock = -1;
    if (!PyArg_ParseTuple(args, "OO|i", &pre, &post, &clock)) return -1;
    if (!PyCallable_Check(pre) || !PyCallable_Check(post)) {
        PyErr_SetString(PyExc_TypeError, "Ticker(pre, post[, clock]): pre and post must be callable");
        return -1;
    }
    Py_INCREF(pre);
    Py_INCREF(post);
    Py_XSETREF(self->pre, pre);
    Py_XSETREF(self->post, post);
    self->clock = clock;
    self->step = self->completed = self->quiet_until = 0;
    self->n = 0;
    return 0;
}

static int ticker_traverse(Ticker *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pre);
    Py_VISIT(self->post);
    return 0;
}

static int ticker_clear(Ticker *self)
{
    Py_CLEAR(self->pre);
    Py_CLEAR(self->post);
    return 0;
}

static void ticker_dealloc(Ticker *self)
{
    PyObject_GC_UnTrack(self);
    ticker_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ticker_forward(PyObject *fn, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    return PyObject_Vectorcall(fn, args, nargs, kwnames);
}

/* The clock reading of code 0 (the thread's CPU time) or 1 (monotonic) as Python's
   time.thread_time / time.perf_counter give it on Linux and macOS; 2: no clock (0.0). -1 where
   it cannot be read (Windows: those steps go through Python). */
static int ticker_now(int clock, double *out)
{
    *out = 0.0;
    if (clock == 2) return 0;
#if defined(_WIN32)
    return -1;
#else
    struct timespec ts;
    if (clock_gettime(clock == 0 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts) != 0) return -1;
    *out = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    return 0;
#endif
}

static PyObject *ticker_pre_hook(Ticker *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    if (self->step < self->quiet_until) Py_RETURN_NONE;
    return ticker_forward(self->pre, args, nargs, kwnames);
}

static PyObject *ticker_post_hook(Ticker *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    self->completed++;
    double now;
    if (self->clock >= 0 && self->step + 1 < self->quiet_until && self->n < 256 &&
        ticker_now(self->clock, &now) == 0) {
        self->log[2 * self->n] = (double)self->step;
        self->log[2 * self->n + 1] = now;
        self->n++;
        self->step++;
        Py_RETURN_NONE;
    }
    return ticker_forward(self->post, args, nargs, kwnames);
}

static PyObject *ticker_take(Ticker *self, PyObject *unused)
{
    PyObject *out = PyList_New(self->n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *pair = Py_BuildValue("(Ld)", (long long)self->log[2 * i], self->log[2 * i + 1]);
        if (pair == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, pair);
    }
    self->n = 0;
    return out;
}

/* copy.deepcopy (of a watched model, say) and pickle: the hooks, the clock and the counts; the
   log starts empty (its steps were the original's to tell its budget of) */
static PyObject *ticker_reduce(Ticker *self, PyObject *unused)
{
    return Py_BuildValue("(O(OOi)(LLL))", (PyObject *)Py_TYPE(self), self->pre, self->post,
                         self->clock, self->step, self->completed, self->quiet_until);
}

static PyObject *ticker_setstate(Ticker *self, PyObject *state)
{
    long long step, completed, quiet_until;
    if (!PyArg_ParseTuple(state, "LLL", &step, &completed, &quiet_until)) return NULL;
    self->step = step;
    self->completed = completed;
    self->quiet_until = quiet_until;
    Py_RETURN_NONE;
}

static PyMethodDef ticker_methods[] = {
    {"__reduce__", (PyCFunction)ticker_reduce, METH_NOARGS, NULL},
    {"__setstate__", (PyCFunction)ticker_setstate, METH_O, NULL},
    {"pre_hook", (PyCFunction)(void (*)(void))ticker_pre_hook, METH_FASTCALL | METH_KEYWORDS,
     "The optimizer's step pre-hook: returns at once on a step below quiet_until, else calls pre."},
    {"post_hook", (PyCFunction)(void (*)(void))ticker_post_hook, METH_FASTCALL | METH_KEYWORDS,
     "The optimizer's step post-hook: counts and logs a step whose next one is below "
     "quiet_until, else calls post."},
    {"take", (PyCFunction)ticker_take, METH_NOARGS,
     "take() -> [(step, clock), ...] logged since the last call (and empties the log)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ticker_members[] = {
    {"step", T_LONGLONG, offsetof(Ticker, step), 0, "steps ended (the step under way)"},
    {"completed", T_LONGLONG, offsetof(Ticker, completed), 0, "post-hook calls"},
    {"quiet_until", T_LONGLONG, offsetof(Ticker, quiet_until), 0,
     "steps below it record nothing"},
    {"clock", T_INT, offsetof(Ticker, clock), 0,
     "0: thread CPU time, 1: monotonic, 2: no clock, -1: every step through Python"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject TickerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gradprobe._fused.Ticker",
    .tp_doc = "Ticker(pre, post[, clock]): optimizer step hooks that need no Python on steps "
              "recording nothing.",
    .tp_basicsize = sizeof(Ticker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ticker_init,
    .tp_dealloc = (destructor)ticker_dealloc,
    .tp_traverse = (traverseproc)ticker_traverse,
    .tp_clear = (inquiry)ticker_clear,
    .tp_methods = ticker_methods,
    .tp_members = ticker_members,
};

static PyMethodDef methods[] = {
    {"moments", fused_moments, METH_VARARGS,
     "moments(addrs, sizes, k, dtype, out[, threads]): per array sum, sum of squares, max |x|, zeros."},
    {"sumsq", fused_sumsq, METH_VARARGS, "sumsq(addrs, sizes, k, dtype, out[, threads]): per array sum of squares."},
    {"sqdist", fused_sqdist, METH_VARARGS,
     "sqdist(addrs, addrs2, sizes, k, dtype, out[, threads]): per pair of arrays, sum of squared "
     "differences."},
    {"outputs", fused_outputs, METH_VARARGS,
     "outputs(addrs, k, outer, units, inner, dtype, low, high, out, unit_max): per array sum, "
     "sum of squares, count, count outside [low, high]; per unit max when unit_max != 0."},
    {"sumsq1", fused_sumsq1, METH_VARARGS, "sumsq1(addr, n, dtype) -> sum of squares."},
    {"output1", fused_output1, METH_VARARGS,
     "output1(addr, outer, units, inner, dtype, low, high, unit_max) -> (sum, sumsq, n, outside)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fused(void)
{
    if (PyType_Ready(&TickerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&TickerType);
    if (PyModule_AddObject(m, "Ticker", (PyObject *)&TickerType) < 0) {
        Py_DECREF(&TickerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
