/* A stand-in libnvidia-ml.so.1 for tests: devices whose power is a known function of
 * CLOCK_MONOTONIC time and whose energy counter is its exact integral.
 *
 * Configured at nvmlInit from FAKE_NVML_DEVICES: devices separated by ';', each a list
 * of key=value separated by ','. Keys (defaults in brackets):
 *   base_w [300]   amp_w [0]   period_s [1]      level(t) = base + amp*sin(2*pi*t/period)
 *   update_ms [100]            energy counter refresh period (the value is stale between);
 *                              alias counter_period_ms
 *   counter_phase_ms [0]       the counter refreshes at phase + k * period
 *   power_update_ms [20]       instant power (field 186) refresh period; alias power_period_ms
 *   power_window_ms [0]        field 186 is the mean power over this window before its
 *                              refresh (H100: about 25 ms); 0: the power at the refresh
 *   avg [1]                    nvmlDeviceGetPowerUsage / field 185 is a 1 s average
 *   counter [1]                0: the energy counter is NOT_SUPPORTED
 *   fields [1]                 0: nvmlDeviceGetFieldValues is NOT_SUPPORTED
 *   latency_us [0]             every device call busy-waits this long
 *   lost_after_s [-1]          after this many s from init every device call is GPU_IS_LOST
 *   reset_at_s [-1]            the counter restarts from 0 this many s after init
 *   limit_w [700]              the default power limit (also the enforced one until a set)
 *   procs [0]                  other processes computing on the GPU (pids 4000000 + i)
 *   name [Fake GPU <i>]        the GPU's name (no ',' or ';'); uuid [GPU-fa4e...000<i>]
 *                              its UUID (a cluster test gives each node its own)
 *   busy_w [0]                 > 0: power follows the work: a thread of this library sets,
 *                              every follow_ms [1], the step level to base_w + busy_w x the
 *                              CPU use of this process (other threads than its own) over
 *                              the last period, capped at one core (the thread runs
 *                              from the first nvmlInit to the last nvmlShutdown: do not
 *                              fork in between, a child could inherit a held lock)
 *
 * Power follows the work: power(t) = level(t) + step(t), where step(t) is a piecewise-
 * constant history with exact CLOCK_MONOTONIC ns breakpoints (0 before the first),
 * changed by fake_nvml_set_power_w (tests) or by the busy_w thread. The set power w means
 * the level becomes w: step = w - base_w. The counter at each refresh is the exact
 * integral of power(t) from t = 0 (floored to mJ), so fake_nvml_true_energy_j gives the
 * truth of any interval. History is kept from nvmlInit until the next first nvmlInit.
 * Times are CLOCK_MONOTONIC seconds (ns in the test calls).
 * Temperature, clocks and clock event reasons (keys temp_c, temp_c_per_w, sm_mhz, mem_mhz,
 * throttle, thermal, event_reasons): see the issue 17 block below.
 *
 * Power limit (issue 15; keys read apart from parse(), like issue 11's):
 *   min_limit_w [200]  max_limit_w [700]   nvmlDeviceGetPowerManagementLimitConstraints;
 *                              nvmlDeviceSetPowerManagementLimit accepts limits within
 *                              them (else INVALID_ARGUMENT)
 *   perm [1]                   0: nvmlDeviceSetPowerManagementLimit answers NO_PERMISSION (4)
 *   state=/path                (or env FAKE_NVML_STATE) a file holding the set limits
 *                              ("index limit_w" lines), so a limit persists across
 *                              processes as a GPU's does; read at nvmlInit and by every
 *                              limit read, written (atomically) by every set
 * Nothing is capped until a limit is set (here or, through the state file, by another
 * process): from that moment the step is capped so that power = min(base_w + step, limit)
 * (exact for amp_w 0; a sine level is not itself capped), and the counter and
 * fake_nvml_true_energy_j integrate the capped power. A limit equal to the default
 * removes the file's line but keeps capping at it. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXDEV 8
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15

typedef struct {
    double base_w, amp_w, period_s, update_s, power_update_s, latency_s, lost_after_s,
        reset_at_s, limit_w, counter_phase_s, power_window_s, busy_w, follow_s;
    int avg, counter, fields, index, procs;
    char name[64], uuid[80];
    /* the step history: breakpoints h_t[i] (ns), step power h_w[i] (W) from h_t[i] on,
     * h_e[i] the integral of the step power from h_t[0] to h_t[i] (J) */
    long long *h_t;
    double *h_w, *h_e;
    long n_h, cap_h;
    long long seen_ns; /* the latest time an NVML read evaluated the history at */
} dev_t_;

static dev_t_ devs[MAXDEV];
static int ndev = 0;
/* issue 15: the power limit in force (W), the step cap it implies (W; INFINITY: none
 * set), the step the work asks for before the cap (W) */
static double pl_cur_w[MAXDEV], pl_cap_w[MAXDEV], pl_req_w[MAXDEV];
static int refcount = 0;
static double t_init = 0;
/* guards the histories: the sampler thread, the busy_w thread and the tests use them */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t follower;
static volatile int follow_run = 0;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double now_s(void) { return now_ns() * 1e-9; }

static double level_at(const dev_t_ *d, double t) {
    return d->base_w + d->amp_w * sin(2 * M_PI * t / d->period_s);
}

static double level_energy(const dev_t_ *d, double t) { /* exact integral from 0, J */
    return d->base_w * t + d->amp_w * d->period_s / (2 * M_PI) * (1 - cos(2 * M_PI * t / d->period_s));
}

/* Index of the last breakpoint at or before t_ns, -1 if none (lock held). */
static long bp_at(const dev_t_ *d, long long t_ns) {
    long lo = 0, hi = d->n_h; /* first breakpoint after t_ns is in [lo, hi] */
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (d->h_t[mid] <= t_ns) lo = mid + 1; else hi = mid;
    }
    return lo - 1;
}

static double step_energy_ns(const dev_t_ *d, long long t_ns) { /* lock held */
    long i = bp_at(d, t_ns);
    if (i < 0) return 0.0;
    return d->h_e[i] + d->h_w[i] * (t_ns - d->h_t[i]) * 1e-9;
}

/* Exact cumulative energy (J) at t_ns; the integer ns keeps the history part exact. */
static double energy_ns(dev_t_ *d, long long t_ns) {
    pthread_mutex_lock(&lock);
    double e = step_energy_ns(d, t_ns);
    if (t_ns > d->seen_ns && t_ns <= now_ns()) d->seen_ns = t_ns; /* see push_step_at */
    pthread_mutex_unlock(&lock);
    return level_energy(d, t_ns * 1e-9) + e;
}

static double power_ns(dev_t_ *d, long long t_ns) {
    pthread_mutex_lock(&lock);
    long i = bp_at(d, t_ns);
    if (t_ns > d->seen_ns && t_ns <= now_ns()) d->seen_ns = t_ns; /* see push_step_at */
    double w = i < 0 ? 0.0 : d->h_w[i];
    pthread_mutex_unlock(&lock);
    return level_at(d, t_ns * 1e-9) + w;
}

/* Append a breakpoint: from t_ns on the step power is w. -1 if t_ns is before the last. */
static int push_step_at(dev_t_ *d, long long t_ns, double w, int follow);
static int push_step(dev_t_ *d, long long t_ns, double w) { return push_step_at(d, t_ns, w, 0); }

/* follow: t_ns is when the caller looked at the clock; an NVML read may have evaluated the
 * history at a later time since (the caller can be preempted for ms before the lock), and
 * a step placed before that time would change a value already read (a counter that goes
 * backwards reads as a reset): the step goes at the latest time read instead. */
static int push_step_at(dev_t_ *d, long long t_ns, double w, int follow) {
    int r = 0;
    pl_req_w[d - devs] = w; /* issue 15: the work's step, then the limit's cap */
    if (w > pl_cap_w[d - devs]) w = pl_cap_w[d - devs];
    pthread_mutex_lock(&lock);
    if (follow && t_ns < d->seen_ns) t_ns = d->seen_ns;
    if (d->n_h > 0 && t_ns < d->h_t[d->n_h - 1]) {
        r = -1;
    } else if (d->n_h > 0 && t_ns == d->h_t[d->n_h - 1]) {
        d->h_w[d->n_h - 1] = w;
    } else if (d->n_h > 0 && d->h_w[d->n_h - 1] == w) {
        /* no change: nothing to record */
    } else {
        if (d->n_h == d->cap_h) {
            long cap = d->cap_h ? 2 * d->cap_h : 1024;
            d->h_t = realloc(d->h_t, cap * sizeof *d->h_t);
            d->h_w = realloc(d->h_w, cap * sizeof *d->h_w);
            d->h_e = realloc(d->h_e, cap * sizeof *d->h_e);
            d->cap_h = cap;
        }
        long n = d->n_h;
        d->h_e[n] = n ? step_energy_ns(d, t_ns) : 0.0;
        d->h_t[n] = t_ns;
        d->h_w[n] = w;
        d->n_h = n + 1;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

static long long refresh_ns(long long t_ns, double period_s, double phase_s) {
    long long p = llround(period_s * 1e9), ph = llround(phase_s * 1e9);
    if (p <= 0) return t_ns;
    long long k = (t_ns - ph) / p;
    if ((t_ns - ph) % p < 0) k--; /* floor for times before the phase */
    return ph + k * p;
}

static double cpu_s(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The busy_w thread: every follow_s, the CPU use of the process (less this thread's own)
 * over the last period sets the step of each busy_w device. Linux accounts another
 * thread's CPU time to the process clock in scheduler ticks (4 ms at HZ=250), so one
 * 1 ms period can see 4 ms of CPU and the next three none: CPU time above one core in a
 * period is carried into the next ones instead of cut off, which keeps the mean right. */
static void *follow(void *arg) {
    (void)arg;
    double period = 1e-3;
    for (int i = 0; i < ndev; i++)
        if (devs[i].busy_w > 0 && devs[i].follow_s > 0) period = devs[i].follow_s;
    long long p_ns = llround(period * 1e9);
    long long t_prev = now_ns(), deadline = t_prev;
    double cpu_prev = cpu_s(CLOCK_PROCESS_CPUTIME_ID) - cpu_s(CLOCK_THREAD_CPUTIME_ID);
    double carry = 0.0; /* CPU seconds seen but not yet attributed to a period */
    while (follow_run) {
        deadline += p_ns;
        struct timespec dl = {deadline / 1000000000LL, deadline % 1000000000LL};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL);
        long long t = now_ns();
        double cpu = cpu_s(CLOCK_PROCESS_CPUTIME_ID) - cpu_s(CLOCK_THREAD_CPUTIME_ID);
        double dt = (t - t_prev) * 1e-9;
        double avail = cpu - cpu_prev + carry;
        double give = avail < 0 ? 0 : (avail > dt ? dt : avail); /* at most one core */
        carry = avail > give ? avail - give : 0.0;
        if (carry > 0.05) carry = 0.05; /* never more than 50 ms of backlog */
        double use = dt > 0 ? give / dt : 0.0;
        for (int i = 0; i < ndev; i++)
            if (devs[i].busy_w > 0) push_step_at(&devs[i], t, devs[i].busy_w * use, 1);
        t_prev = t;
        cpu_prev = cpu;
        if (deadline < t - p_ns) deadline = t; /* fell behind: no burst */
    }
    return NULL;
}

static void parse(void) {
    const char *env = getenv("FAKE_NVML_DEVICES");
    char buf[4096];
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAXDEV; i++) {
        free(devs[i].h_t); free(devs[i].h_w); free(devs[i].h_e);
        memset(&devs[i], 0, sizeof devs[i]);
    }
    ndev = 0;
    pthread_mutex_unlock(&lock);
    snprintf(buf, sizeof buf, "%s", env ? env : "");
    char *save1 = NULL;
    for (char *dev = strtok_r(buf, ";", &save1); dev && ndev < MAXDEV; dev = strtok_r(NULL, ";", &save1)) {
        dev_t_ *d = &devs[ndev];
        *d = (dev_t_){.base_w = 300, .amp_w = 0, .period_s = 1, .update_s = 0.1,
                      .power_update_s = 0.02, .latency_s = 0, .lost_after_s = -1,
                      .reset_at_s = -1, .limit_w = 700, .counter_phase_s = 0,
                      .power_window_s = 0, .busy_w = 0, .follow_s = 1e-3, .avg = 1,
                      .counter = 1, .fields = 1, .index = ndev, .procs = 0};
        snprintf(d->name, sizeof d->name, "Fake GPU %d", ndev);
        snprintf(d->uuid, sizeof d->uuid, "GPU-fa4e0000-0000-0000-0000-00000000000%d", ndev);
        char *save2 = NULL;
        for (char *kv = strtok_r(dev, ",", &save2); kv; kv = strtok_r(NULL, ",", &save2)) {
            char key[32];
            double v;
            if (!strncmp(kv, "name=", 5)) { snprintf(d->name, sizeof d->name, "%s", kv + 5); continue; }
            if (!strncmp(kv, "uuid=", 5)) { snprintf(d->uuid, sizeof d->uuid, "%s", kv + 5); continue; }
            if (sscanf(kv, "%31[^=]=%lf", key, &v) != 2) continue;
            if (!strcmp(key, "base_w")) d->base_w = v;
            else if (!strcmp(key, "amp_w")) d->amp_w = v;
            else if (!strcmp(key, "period_s")) d->period_s = v;
            else if (!strcmp(key, "update_ms") || !strcmp(key, "counter_period_ms")) d->update_s = v * 1e-3;
            else if (!strcmp(key, "counter_phase_ms")) d->counter_phase_s = v * 1e-3;
            else if (!strcmp(key, "power_update_ms") || !strcmp(key, "power_period_ms")) d->power_update_s = v * 1e-3;
            else if (!strcmp(key, "power_window_ms")) d->power_window_s = v * 1e-3;
            else if (!strcmp(key, "avg")) d->avg = (int)v;
            else if (!strcmp(key, "counter")) d->counter = (int)v;
            else if (!strcmp(key, "fields")) d->fields = (int)v;
            else if (!strcmp(key, "latency_us")) d->latency_s = v * 1e-6;
            else if (!strcmp(key, "lost_after_s")) d->lost_after_s = v;
            else if (!strcmp(key, "reset_at_s")) d->reset_at_s = v;
            else if (!strcmp(key, "limit_w")) d->limit_w = v;
            else if (!strcmp(key, "procs")) d->procs = (int)v;
            else if (!strcmp(key, "busy_w")) d->busy_w = v;
            else if (!strcmp(key, "follow_ms")) d->follow_s = v * 1e-3;
        }
        pl_cur_w[ndev] = d->limit_w; /* issue 15: no limit set, nothing capped */
        pl_cap_w[ndev] = INFINITY;
        pl_req_w[ndev] = 0.0;
        ndev++;
    }
}

/* Every device call: check init, busy-wait the latency, fail if the GPU is lost. */
static int enter(void *h, dev_t_ **out) {
    if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    dev_t_ *d = (dev_t_ *)h;
    if (d < devs || d >= devs + ndev) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->latency_s > 0) {
        double until = now_s() + d->latency_s;
        while (now_s() < until) {}
    }
    if (d->lost_after_s >= 0 && now_s() - t_init >= d->lost_after_s) return NVML_ERROR_GPU_IS_LOST;
    *out = d;
    return NVML_SUCCESS;
}

static unsigned long long counter_mj(dev_t_ *d) {
    long long u = refresh_ns(now_ns(), d->update_s, d->counter_phase_s);
    double e = energy_ns(d, u);
    if (d->reset_at_s >= 0 && u * 1e-9 >= t_init + d->reset_at_s)
        e -= energy_ns(d, llround((t_init + d->reset_at_s) * 1e9));
    return (unsigned long long)floor(e * 1000.0);
}

static unsigned int average_mw(dev_t_ *d) {
    long long u = refresh_ns(now_ns(), d->update_s, d->counter_phase_s);
    double p = d->avg ? energy_ns(d, u) - energy_ns(d, u - 1000000000LL) : power_ns(d, u);
    return (unsigned int)lround(p * 1000.0);
}

static unsigned int instant_mw(dev_t_ *d) {
    long long u = refresh_ns(now_ns(), d->power_update_s, 0);
    long long w = llround(d->power_window_s * 1e9);
    double p = w > 0 ? (energy_ns(d, u) - energy_ns(d, u - w)) / (w * 1e-9) : power_ns(d, u);
    return (unsigned int)lround(p * 1000.0);
}

/* --- calls for tests (not NVML) ------------------------------------------------------ */

/* A power step on device dev at t_ns (<= 0: now): the level becomes w from then on.
 * Returns the step's time in ns, or -1 (no such device; before the last breakpoint). */
long long fake_nvml_set_power_w_at(int dev, double w, long long t_ns) {
    if (dev < 0 || dev >= ndev) return -1;
    if (t_ns <= 0) t_ns = now_ns();
    return push_step(&devs[dev], t_ns, w - devs[dev].base_w) ? -1 : t_ns;
}

long long fake_nvml_set_power_w(int dev, double w) { return fake_nvml_set_power_w_at(dev, w, 0); }

/* The exact energy (J) device dev used over [t0_ns, t1_ns]; NaN for no such device. */
double fake_nvml_true_energy_j(int dev, long long t0_ns, long long t1_ns) {
    if (dev < 0 || dev >= ndev) return NAN;
    return energy_ns(&devs[dev], t1_ns) - energy_ns(&devs[dev], t0_ns);
}

/* The exact power (W) of device dev at t_ns; NaN for no such device. */
double fake_nvml_true_power_w(int dev, long long t_ns) {
    if (dev < 0 || dev >= ndev) return NAN;
    return power_ns(&devs[dev], t_ns);
}

/* The time (ns) of the counter's last refresh at or before t_ns; -1 for no such device. */
long long fake_nvml_counter_refresh_ns(int dev, long long t_ns) {
    if (dev < 0 || dev >= ndev) return -1;
    return refresh_ns(t_ns, devs[dev].update_s, devs[dev].counter_phase_s);
}

/* Copy up to n breakpoints of the step history (times in ns, step power in W);
 * returns how many there are in all. */
long fake_nvml_history(int dev, long long *t_ns, double *w, long n) {
    if (dev < 0 || dev >= ndev) return -1;
    pthread_mutex_lock(&lock);
    dev_t_ *d = &devs[dev];
    for (long i = 0; i < n && i < d->n_h; i++) { t_ns[i] = d->h_t[i]; w[i] = d->h_w[i]; }
    long all = d->n_h;
    pthread_mutex_unlock(&lock);
    return all;
}

static void pl_load_all(void); /* issue 15, below */
int nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    if (refcount++ == 0) {
        parse();
        t_init = now_s();
        int any = 0;
        for (int i = 0; i < ndev; i++) any |= devs[i].busy_w > 0;
        pl_load_all(); /* issue 15: limits another process set stay in force */
        if (any) {
            follow_run = 1;
            if (pthread_create(&follower, NULL, follow, NULL)) follow_run = 0;
        }
    }
    return NVML_SUCCESS;
}
int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
int nvmlInit(void) { return nvmlInitWithFlags(0); }
int nvmlShutdown(void) {
    if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    if (--refcount == 0 && follow_run) { /* the history stays for truth queries */
        follow_run = 0;
        pthread_join(follower, NULL);
    }
    return NVML_SUCCESS;
}

const char *nvmlErrorString(int r) {
    switch (r) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 7: return "Insufficient Size";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
    }
}

/* ---- Issue 11 (GPU path): keys read apart from parse(), for discovery tests ----
 *   mig [0]            1: MIG mode is on (nvmlDeviceGetMigMode reports 1)
 *   handle_fails [0]   1: nvmlDeviceGetHandleByIndex fails (Unknown Error) for this GPU
 * Read from FAKE_NVML_DEVICES as parse() reads it; the device's position is its index. */
#define NVML_ERROR_UNKNOWN 999
static double extra_key(int index, const char *want, double dflt) {
    const char *env = getenv("FAKE_NVML_DEVICES");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", env ? env : "");
    char *save1 = NULL;
    int i = 0;
    for (char *dev = strtok_r(buf, ";", &save1); dev; dev = strtok_r(NULL, ";", &save1), i++) {
        if (i != index) continue;
        char *save2 = NULL;
        for (char *kv = strtok_r(dev, ",", &save2); kv; kv = strtok_r(NULL, ",", &save2)) {
            char key[32];
            double v;
            if (sscanf(kv, "%31[^=]=%lf", key, &v) == 2 && !strcmp(key, want)) return v;
        }
    }
    return dflt;
}
/* ---- end of issue 11 block ---- */

int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    *count = ndev;
    return NVML_SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) {
    if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;
    if ((int)i >= ndev) return NVML_ERROR_INVALID_ARGUMENT;
    if (extra_key((int)i, "handle_fails", 0) != 0) return NVML_ERROR_UNKNOWN; /* issue 11 */
    *h = &devs[i];
    return NVML_SUCCESS;
}

static int copy_str(char *dst, unsigned int n, const char *src) {
    if (strlen(src) + 1 > n) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

int nvmlDeviceGetName(void *h, char *name, unsigned int n) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    return copy_str(name, n, d->name);
}
int nvmlDeviceGetUUID(void *h, char *uuid, unsigned int n) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    return copy_str(uuid, n, d->uuid);
}
int nvmlSystemGetDriverVersion(char *v, unsigned int n) { return copy_str(v, n, "999.99-fake"); }

static double pl_limit_w(dev_t_ *d); /* issue 15, below */
int nvmlDeviceGetEnforcedPowerLimit(void *h, unsigned int *mw) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *mw = (unsigned int)llround(pl_limit_w(d) * 1000); /* issue 15: the limit in force */
    return NVML_SUCCESS;
}

typedef struct { unsigned long long total, free, used; } mem_t;
int nvmlDeviceGetMemoryInfo(void *h, mem_t *m) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    m->total = 80ULL << 30; m->free = 79ULL << 30; m->used = 1ULL << 30;
    return NVML_SUCCESS;
}

int nvmlDeviceGetMaxClockInfo(void *h, int type, unsigned int *mhz) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *mhz = type == 2 ? 2619 : 1980; /* NVML_CLOCK_MEM = 2 */
    return NVML_SUCCESS;
}

int nvmlDeviceGetMigMode(void *h, unsigned int *cur, unsigned int *pend) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *cur = *pend = extra_key(d->index, "mig", 0) != 0; /* issue 11 */
    return NVML_SUCCESS;
}

int nvmlDeviceGetTotalEnergyConsumption(void *h, unsigned long long *mj) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    if (!d->counter) return NVML_ERROR_NOT_SUPPORTED;
    *mj = counter_mj(d);
    return NVML_SUCCESS;
}

int nvmlDeviceGetPowerUsage(void *h, unsigned int *mw) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *mw = average_mw(d);
    return NVML_SUCCESS;
}

typedef struct {
    unsigned int fieldId, scopeId;
    long long timestamp, latencyUsec;
    unsigned int valueType, nvmlReturn;
    union { double d; unsigned int ui; unsigned long long ull; } value;
} field_t;

int nvmlDeviceGetFieldValues(void *h, int count, field_t *v) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    if (!d->fields) return NVML_ERROR_NOT_SUPPORTED;
    for (int i = 0; i < count; i++) {
        v[i].timestamp = (long long)(now_s() * 1e6);
        v[i].latencyUsec = 0;
        v[i].nvmlReturn = NVML_SUCCESS;
        switch (v[i].fieldId) {
        case 83:
            if (!d->counter) { v[i].nvmlReturn = NVML_ERROR_NOT_SUPPORTED; break; }
            v[i].valueType = 3; v[i].value.ull = counter_mj(d); break;
        case 185: v[i].valueType = 1; v[i].value.ui = average_mw(d); break;
        case 186: v[i].valueType = 1; v[i].value.ui = instant_mw(d); break;
        default: v[i].nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    return NVML_SUCCESS;
}

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} proc_t;

int nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned int *count, proc_t *procs) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    unsigned int n = (unsigned int)d->procs;
    if (n == 0) { *count = 0; return NVML_SUCCESS; }
    if (procs == NULL || *count < n) { *count = n; return NVML_ERROR_INSUFFICIENT_SIZE; }
    for (unsigned int i = 0; i < n; i++) {
        procs[i].pid = 4000000 + i;
        procs[i].usedGpuMemory = 1ULL << 30;
        procs[i].gpuInstanceId = 0xFFFFFFFF;
        procs[i].computeInstanceId = 0xFFFFFFFF;
    }
    *count = n;
    return NVML_SUCCESS;
}

/* ---- Issue 17 (thermal and clock state): temperature, clocks, clock event reasons ----
 * Keys, read apart from parse() (defaults in brackets):
 *   temp_c [45]        nvmlDeviceGetTemperature (NVML_TEMPERATURE_GPU), C
 *   temp_c_per_w [0]   > 0: the temperature rises with power: temp_c + this x (power(t) -
 *                      base_w), power(t) the device's exact power now
 *   sm_mhz [1980]      nvmlDeviceGetClockInfo(NVML_CLOCK_SM), MHz
 *   mem_mhz [2619]     nvmlDeviceGetClockInfo(NVML_CLOCK_MEM), MHz
 *   throttle [0]       nvmlDeviceGetCurrentClocksEventReasons (and ..ThrottleReasons):
 *                      the bitmask (4 = SW power cap, 8 = HW slowdown, 32 = SW thermal, ...)
 *   thermal [1]        0: all of the above are NOT_SUPPORTED
 *   event_reasons [1]  0: only the older nvmlDeviceGetCurrentClocksThrottleReasons answers
 *                      (the ..EventReasons call is NOT_SUPPORTED, as on older drivers)
 * Test calls (not NVML): fake_nvml_set_throttle(dev, mask), fake_nvml_set_temp_c(dev, c),
 * fake_nvml_set_clocks_mhz(dev, sm, mem) change them from then on (until the next first
 * nvmlInit, which reads the keys again). */
typedef struct { double temp_c, temp_c_per_w, sm_mhz, mem_mhz; unsigned long long mask;
                 int supported, event_reasons; } therm_t;
static therm_t therm[MAXDEV];
static double therm_read_at = -1; /* t_init when the keys were last read */
static pthread_mutex_t therm_lock = PTHREAD_MUTEX_INITIALIZER;

static therm_t *therm_of(dev_t_ *d) { /* the device's state, keys read once per init */
    pthread_mutex_lock(&therm_lock);
    if (therm_read_at != t_init) {
        for (int i = 0; i < ndev; i++) {
            therm[i].temp_c = extra_key(i, "temp_c", 45);
            therm[i].temp_c_per_w = extra_key(i, "temp_c_per_w", 0);
            therm[i].sm_mhz = extra_key(i, "sm_mhz", 1980);
            therm[i].mem_mhz = extra_key(i, "mem_mhz", 2619);
            therm[i].mask = (unsigned long long)extra_key(i, "throttle", 0);
            therm[i].supported = extra_key(i, "thermal", 1) != 0;
            therm[i].event_reasons = extra_key(i, "event_reasons", 1) != 0;
        }
        therm_read_at = t_init;
    }
    pthread_mutex_unlock(&therm_lock);
    return &therm[d->index];
}

int nvmlDeviceGetTemperature(void *h, int sensor, unsigned int *c) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    therm_t *t = therm_of(d);
    if (!t->supported || sensor != 0) return NVML_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&therm_lock);
    double v = t->temp_c, k = t->temp_c_per_w;
    pthread_mutex_unlock(&therm_lock);
    if (k > 0) v += k * (power_ns(d, now_ns()) - d->base_w);
    *c = v > 0 ? (unsigned int)lround(v) : 0;
    return NVML_SUCCESS;
}

int nvmlDeviceGetClockInfo(void *h, int type, unsigned int *mhz) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    therm_t *t = therm_of(d);
    if (!t->supported || (type != 1 && type != 2)) return NVML_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&therm_lock);
    *mhz = (unsigned int)lround(type == 1 ? t->sm_mhz : t->mem_mhz); /* 1 SM, 2 MEM */
    pthread_mutex_unlock(&therm_lock);
    return NVML_SUCCESS;
}

static int reasons(void *h, unsigned long long *mask, int event_call) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    therm_t *t = therm_of(d);
    if (!t->supported || (event_call && !t->event_reasons)) return NVML_ERROR_NOT_SUPPORTED;
    pthread_mutex_lock(&therm_lock);
    *mask = t->mask;
    pthread_mutex_unlock(&therm_lock);
    return NVML_SUCCESS;
}
int nvmlDeviceGetCurrentClocksEventReasons(void *h, unsigned long long *m) { return reasons(h, m, 1); }
int nvmlDeviceGetCurrentClocksThrottleReasons(void *h, unsigned long long *m) { return reasons(h, m, 0); }

/* Test calls: 0 on success, -1 for no such device. */
int fake_nvml_set_throttle(int dev, unsigned long long mask) {
    if (dev < 0 || dev >= ndev) return -1;
    therm_t *t = therm_of(&devs[dev]);
    pthread_mutex_lock(&therm_lock); t->mask = mask; pthread_mutex_unlock(&therm_lock);
    return 0;
}
int fake_nvml_set_temp_c(int dev, double c) {
    if (dev < 0 || dev >= ndev) return -1;
    therm_t *t = therm_of(&devs[dev]);
    pthread_mutex_lock(&therm_lock); t->temp_c = c; pthread_mutex_unlock(&therm_lock);
    return 0;
}
int fake_nvml_set_clocks_mhz(int dev, double sm, double mem) {
    if (dev < 0 || dev >= ndev) return -1;
    therm_t *t = therm_of(&devs[dev]);
    pthread_mutex_lock(&therm_lock); t->sm_mhz = sm; t->mem_mhz = mem;
    pthread_mutex_unlock(&therm_lock);
    return 0;
}
/* ---- end of issue 17 block ---- */
/* ---- Issue 15 (power limit): set/get calls, the cap, the state file ---- */
#define NVML_ERROR_NO_PERMISSION 4
static const char *pl_state_path(char *buf, size_t n) {
    const char *e = getenv("FAKE_NVML_STATE");
    if (e && *e) { snprintf(buf, n, "%s", e); return buf; }
    const char *env = getenv("FAKE_NVML_DEVICES");
    const char *p = env ? strstr(env, "state=") : NULL;
    if (!p) return NULL;
    p += 6;
    size_t k = strcspn(p, ",;");
    if (k == 0 || k >= n) return NULL;
    memcpy(buf, p, k);
    buf[k] = 0;
    return buf;
}

/* Make device i's limit w from now on (the cap from this moment). */
static void pl_apply(int i, double w, int set) {
    dev_t_ *d = &devs[i];
    if (!set && pl_cap_w[i] == INFINITY && w == d->limit_w) return; /* never set: no cap */
    if (pl_cap_w[i] != INFINITY && w == pl_cur_w[i]) return;
    pl_cur_w[i] = w;
    pl_cap_w[i] = w - d->base_w;
    push_step(d, now_ns(), pl_req_w[i]); /* the work's step again, under the new cap */
}

/* The state file's limit for each device (its default where the file has no line). */
static void pl_load_all(void) {
    char path[1024];
    if (!pl_state_path(path, sizeof path)) return;
    double want[MAXDEV];
    for (int i = 0; i < ndev; i++) want[i] = devs[i].limit_w;
    FILE *f = fopen(path, "r");
    if (f) {
        int i;
        double w;
        while (fscanf(f, "%d %lf", &i, &w) == 2)
            if (i >= 0 && i < ndev) want[i] = w;
        fclose(f);
    }
    for (int i = 0; i < ndev; i++) pl_apply(i, want[i], 0);
}

static void pl_save_all(void) {
    char path[1024], tmp[1100];
    if (!pl_state_path(path, sizeof path)) return;
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    for (int i = 0; i < ndev; i++)
        if (pl_cur_w[i] != devs[i].limit_w) fprintf(f, "%d %.3f\n", i, pl_cur_w[i]);
    fclose(f);
    rename(tmp, path);
}

static double pl_limit_w(dev_t_ *d) {
    pl_load_all();
    return pl_cur_w[d - devs];
}

int nvmlDeviceGetPowerManagementLimit(void *h, unsigned int *mw) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *mw = (unsigned int)llround(pl_limit_w(d) * 1000);
    return NVML_SUCCESS;
}

int nvmlDeviceGetPowerManagementDefaultLimit(void *h, unsigned int *mw) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *mw = (unsigned int)llround(d->limit_w * 1000);
    return NVML_SUCCESS;
}

int nvmlDeviceGetPowerManagementLimitConstraints(void *h, unsigned int *min_mw,
                                                 unsigned int *max_mw) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    *min_mw = (unsigned int)llround(extra_key(d->index, "min_limit_w", 200) * 1000);
    *max_mw = (unsigned int)llround(extra_key(d->index, "max_limit_w", 700) * 1000);
    return NVML_SUCCESS;
}

int nvmlDeviceSetPowerManagementLimit(void *h, unsigned int mw) {
    dev_t_ *d; int r = enter(h, &d); if (r) return r;
    if (extra_key(d->index, "perm", 1) == 0) return NVML_ERROR_NO_PERMISSION;
    double w = mw * 1e-3;
    if (w < extra_key(d->index, "min_limit_w", 200) - 1e-9 ||
        w > extra_key(d->index, "max_limit_w", 700) + 1e-9)
        return NVML_ERROR_INVALID_ARGUMENT;
    pl_load_all();
    pl_apply(d->index, w, 1);
    pl_save_all();
    return NVML_SUCCESS;
}
/* ---- end of issue 15 block ---- */
