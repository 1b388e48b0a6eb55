/* io/base/faults.c — commit-point crash injection; semantics in faults.h.
 *
 * State: one table per process, guarded by g_mu. g_pid is the process that
 * owns the table; when getpid() differs (we are a forked child) the table is
 * reset and the environment re-read before counting, so counts are per
 * process and never inherited.
 */
#include "faults.h"

#include "error.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAULT_STAGES_MAX 64
#define FAULT_NAME_MAX 64

typedef struct fault_stage {
    char name[FAULT_NAME_MAX];
    int count;
} fault_stage;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t g_pid;                    /* owner of the table; 0 = never used */
static fault_stage g_stage[FAULT_STAGES_MAX];
static int g_nstage;
static char g_kill_stage[FAULT_NAME_MAX]; /* "" = no kill requested */
static long g_kill_n;
static int g_count_commits;
static int g_atexit_done;

static void print_counts(void) {
    pthread_mutex_lock(&g_mu);
    if (g_pid == getpid() && g_count_commits)
        for (int i = 0; i < g_nstage; i++) fprintf(stderr, "commit-points %s %d\n", g_stage[i].name, g_stage[i].count);
    pthread_mutex_unlock(&g_mu);
}

/* Called with g_mu held. */
static void table_init(void) {
    pid_t pid = getpid();
    if (g_pid == pid) return;
    g_pid = pid;
    g_nstage = 0;
    g_kill_stage[0] = 0;
    g_kill_n = 0;
    const char *c = getenv("SLICEPIPE_COUNT_COMMITS");
    g_count_commits = c && *c && strcmp(c, "0") != 0;
    if (g_count_commits && !g_atexit_done) { /* atexit handlers survive fork: register once */
        g_atexit_done = 1;
        atexit(print_counts);
    }
    const char *k = getenv("SLICEPIPE_KILL_AT");
    if (!k || !*k) return;
    const char *colon = strrchr(k, ':');
    char *end = NULL;
    long n = colon ? strtol(colon + 1, &end, 10) : 0;
    size_t len = colon ? (size_t)(colon - k) : 0;
    if (!colon || len == 0 || len >= FAULT_NAME_MAX || !end || end == colon + 1 || *end || n < 1) {
        fprintf(stderr, "slicepipe: SLICEPIPE_KILL_AT='%s' is malformed (expected STAGE:N with N >= 1)\n", k);
        pthread_mutex_unlock(&g_mu);
        exit(SP_EX_USAGE);
    }
    memcpy(g_kill_stage, k, len);
    g_kill_stage[len] = 0;
    g_kill_n = n;
}

/* Called with g_mu held; NULL if the table is full. */
static fault_stage *stage_find(const char *stage, int create) {
    for (int i = 0; i < g_nstage; i++)
        if (strcmp(g_stage[i].name, stage) == 0) return &g_stage[i];
    if (!create) return NULL;
    SP_ASSERT(strlen(stage) < FAULT_NAME_MAX);
    SP_ASSERT(g_nstage < FAULT_STAGES_MAX);
    fault_stage *s = &g_stage[g_nstage++];
    snprintf(s->name, sizeof s->name, "%s", stage);
    s->count = 0;
    return s;
}

void sp_fault_commit_point(const char *stage) {
    pthread_mutex_lock(&g_mu);
    table_init();
    fault_stage *s = stage_find(stage, 1);
    s->count++;
    int die = g_kill_n && s->count == g_kill_n && strcmp(g_kill_stage, stage) == 0;
    pthread_mutex_unlock(&g_mu);
    if (die) {
        kill(getpid(), SIGKILL);
        for (;;) pause(); /* SIGKILL cannot be caught; never returns */
    }
}

int sp_fault_commit_count(const char *stage) {
    pthread_mutex_lock(&g_mu);
    int n = 0;
    if (g_pid == getpid()) {
        fault_stage *s = stage_find(stage, 0);
        if (s) n = s->count;
    }
    pthread_mutex_unlock(&g_mu);
    return n;
}
