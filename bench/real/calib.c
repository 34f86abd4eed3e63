/*
 * calib: measure the machine costs pervma's timed simulator charges, on the
 * machine it runs on.  Each measurement runs --repeats times (default 7) and
 * each repeat keeps the 10th percentile of many short batches (the batches
 * no other job preempted); one line per cost: "name median min max unit  #
 * how", median and spread over the repeats.  The machine profile's [sources]
 * cite these lines.
 *
 *   calib [--repeats N] [--cpus A,B]
 *
 * Threads are pinned (sched_setaffinity) to CPU A, or to A and B when two
 * CPUs take part.  On a machine shared with other jobs each repeat can be
 * preempted: the median and the spread (min..max) are what to read.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MAXREP 64

static int cpu_a, cpu_b = 1, repeats = 7;

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t s;

	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	if (sched_setaffinity(0, sizeof s, &s)) {
		perror("sched_setaffinity");
		exit(1);
	}
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void report(const char *name, double *v, int n, const char *unit, const char *how)
{
	qsort(v, n, sizeof *v, cmp);
	printf("%-22s %10.1f %10.1f %10.1f %s  # %s (median, min, max of %d)\n",
	       name, v[n / 2], v[0], v[n - 1], unit, how, n);
	fflush(stdout);
}

/* Batches: a cost is timed over many short batches and the 10th percentile
 * of the per-op times is kept: the batches no other job's time slice landed
 * in (this machine is shared; noise only ever adds time). */
#define NBATCH 400
static double batch[NBATCH];

static double low_percentile(double *b, int n)
{
	qsort(b, n, sizeof *b, cmp);
	return b[n / 10];
}

static long futex(volatile int *uaddr, int op, int val)
{
	return syscall(SYS_futex, uaddr, op, val, NULL, NULL, 0);
}

/* ---- atomic: lock xadd on a line this CPU owns ---- */
static double atomic_local(void)
{
	static volatile long x;
	const long n = 20000;

	for (int b = 0; b < NBATCH; b++) {
		double t0 = now_ns();

		for (long i = 0; i < n; i++)
			__atomic_fetch_add(&x, 1, __ATOMIC_SEQ_CST);
		batch[b] = (now_ns() - t0) / n;
	}
	return low_percentile(batch, NBATCH);
}

/* ---- line transfer: ping-pong of one line between two pinned CPUs ---- */
static volatile long pingpong __attribute__((aligned(64)));
static const long PP = 400000;  /* round trips; NBATCH batches of PP / NBATCH */

static void *pong(void *arg)
{
	(void)arg;
	pin(cpu_b);
	for (long i = 1; i < 2 * PP; i += 2) {
		while (pingpong != i)
			;
		pingpong = i + 1;
	}
	return NULL;
}

static double line_transfer(void)
{
	pthread_t t;
	double t0;

	pingpong = 0;
	pin(cpu_a);
	pthread_create(&t, NULL, pong, NULL);
	t0 = now_ns();
	for (long i = 0; i < 2 * PP; i += 2) {
		while (pingpong != i)
			;
		if (i && i % (2 * PP / NBATCH) == 0) {  /* a round trip is two hand-overs */
			double t = now_ns();

			batch[i / (2 * PP / NBATCH) - 1] = (t - t0) / (2 * PP / NBATCH);
			t0 = t;
		}
		pingpong = i + 1;
	}
	while (pingpong != 2 * PP)
		;
	batch[NBATCH - 1] = (now_ns() - t0) / (2 * PP / NBATCH);
	pthread_join(t, NULL);
	return low_percentile(batch, NBATCH);  /* each hand-over moves the line once */
}

/* ---- futex ping-pong: same CPU (context switch) or two CPUs (wake-up) ---- */
static volatile int fw[2] __attribute__((aligned(64)));
static volatile double wake_sent;
static double wake_lat[4096];
static double wake_call[4096];  /* the waker's own FUTEX_WAKE call, per round */
static double wake_call_med;    /* its median, set by wakeup() and wakeup_after() */
static double wake_spread;      /* wakeup_after(): (p90 - p10) / (p90 + p10) of the latencies */
static double wake_med;         /* wakeup_after(): their median */
static int same_cpu, nround;

static void *futex_peer(void *arg)
{
	(void)arg;
	pin(same_cpu ? cpu_a : cpu_b);
	for (int i = 0; i < nround; i++) {
		while (fw[1] == 0)
			futex(&fw[1], FUTEX_WAIT_PRIVATE, 0);
		if (!same_cpu)
			wake_lat[i] = now_ns() - wake_sent;
		fw[1] = 0;
		fw[0] = 1;
		futex(&fw[0], FUTEX_WAKE_PRIVATE, 1);
	}
	return NULL;
}

/* Same CPU: a round trip is two futex wakes, two waits and two switches. */
static double context_switch(double syscall_ns)
{
	pthread_t t;
	double t0;

	same_cpu = 1;
	nround = 20 * NBATCH;
	fw[0] = fw[1] = 0;
	pin(cpu_a);
	pthread_create(&t, NULL, futex_peer, NULL);
	t0 = now_ns();
	for (int i = 0; i < nround; i++) {
		fw[1] = 1;
		futex(&fw[1], FUTEX_WAKE_PRIVATE, 1);
		while (fw[0] == 0)
			futex(&fw[0], FUTEX_WAIT_PRIVATE, 0);
		fw[0] = 0;
		if ((i + 1) % 20 == 0) {
			double t1 = now_ns();

			batch[i / 20] = (t1 - t0) / 20;
			t0 = t1;
		}
	}
	pthread_join(t, NULL);
	return low_percentile(batch, NBATCH) / 2 - 2 * syscall_ns;
}

/* Two CPUs, the woken one idle for 200 us before each wake: from the waker's
 * FUTEX_WAKE to the sleeper running (wake IPI, idle exit, switch in). */
static double wakeup(void)
{
	pthread_t t;
	struct timespec gap = { 0, 200000 };

	same_cpu = 0;
	nround = 1000;
	fw[0] = fw[1] = 0;
	pin(cpu_a);
	pthread_create(&t, NULL, futex_peer, NULL);
	for (int i = 0; i < nround; i++) {
		nanosleep(&gap, NULL);
		wake_sent = now_ns();
		fw[1] = 1;
		futex(&fw[1], FUTEX_WAKE_PRIVATE, 1);
		wake_call[i] = now_ns() - wake_sent;
		while (fw[0] == 0)
			futex(&fw[0], FUTEX_WAIT_PRIVATE, 0);
		fw[0] = 0;
	}
	pthread_join(t, NULL);
	qsort(wake_call, nround, sizeof *wake_call, cmp);
	wake_call_med = wake_call[nround / 2];
	return low_percentile(wake_lat, nround);
}

/* Two CPUs, the woken one asleep in FUTEX_WAIT for only ~gap_ns before each
 * wake (the waker spins that long instead of sleeping): a fault that falls
 * back to mmap_lock sleeps for one write session, a few microseconds, not
 * for hundreds (an idle vCPU may still be polling then, not halted). */
static double wakeup_after(double gap_ns)
{
	pthread_t t;

	same_cpu = 0;
	nround = 2000;
	fw[0] = fw[1] = 0;
	pin(cpu_a);
	pthread_create(&t, NULL, futex_peer, NULL);
	for (int i = 0; i < nround; i++) {
		double t0 = now_ns();

		while (now_ns() - t0 < gap_ns)
			;
		wake_sent = now_ns();
		fw[1] = 1;
		futex(&fw[1], FUTEX_WAKE_PRIVATE, 1);
		wake_call[i] = now_ns() - wake_sent;
		while (fw[0] == 0)
			futex(&fw[0], FUTEX_WAIT_PRIVATE, 0);
		fw[0] = 0;
	}
	pthread_join(t, NULL);
	qsort(wake_call, nround, sizeof *wake_call, cmp);
	wake_call_med = wake_call[nround / 2];
	qsort(wake_lat, nround, sizeof *wake_lat, cmp);
	wake_spread = (wake_lat[nround * 9 / 10] - wake_lat[nround / 10])
		/ (wake_lat[nround * 9 / 10] + wake_lat[nround / 10]);
	wake_med = wake_lat[nround / 2];
	return low_percentile(wake_lat, nround);
}

/* ---- mprotect's write session, single-threaded (no IPI): one call per
 * direction, timed alone, 400 batches of 50 flips each.
 *   flags: a one-page VMA between two PROT_NONE pages: RW->RO and back only
 *          rewrite vm_flags (no split, no merge, no PTE);
 *   split: the first, untouched page of a 16-page VMA made RO: a split
 *          (a new VMA object, two tree stores);
 *   merge: that page made RW again: it merges back (a VMA detached and freed);
 *   pte:   a whole 256-page VMA, every page touched, RW->RO and back: the
 *          per-PTE work of change_protection ((time - flags) / 256). ---- */
static double flip_ro[NBATCH], flip_rw[NBATCH];

static void mprotect_flips(char *p, unsigned long len, int touch)
{
	const int n = 50;

	for (int b = 0; b < NBATCH; b++) {
		double ro = 0, rw = 0;

		for (int i = 0; i < n; i++) {
			double t0 = now_ns();

			mprotect(p, len, PROT_READ);
			double t1 = now_ns();

			mprotect(p, len, PROT_READ | PROT_WRITE);
			ro += t1 - t0;
			rw += now_ns() - t1;
			if (touch)
				p[0] = 1;  /* this CPU's TLB holds the writable PTE again */
		}
		flip_ro[b] = ro / n;
		flip_rw[b] = rw / n;
	}
}

static char *guarded(unsigned long pages)
{
	char *g = mmap(NULL, (pages + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (g == MAP_FAILED || mmap(g + PAGE, pages * PAGE, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise(g + PAGE, pages * PAGE, MADV_NOHUGEPAGE);
	return g + PAGE;
}

static double mp_flags_ro, mp_flags_rw, mp_split, mp_merge, mp_pte;

static void mprotect_costs(void)
{
	char *one = guarded(1), *sixteen = guarded(16), *many = guarded(256);

	pin(cpu_a);
	mprotect_flips(one, PAGE, 0);
	mp_flags_ro = low_percentile(flip_ro, NBATCH);
	mp_flags_rw = low_percentile(flip_rw, NBATCH);
	mprotect_flips(sixteen, PAGE, 0);
	mp_split = low_percentile(flip_ro, NBATCH);
	mp_merge = low_percentile(flip_rw, NBATCH);
	for (unsigned long o = 0; o < 256 * PAGE; o += PAGE)
		many[o] = 1;
	mprotect_flips(many, 256 * PAGE, 1);
	mp_pte = (low_percentile(flip_ro, NBATCH) + low_percentile(flip_rw, NBATCH)
		  - mp_flags_ro - mp_flags_rw) / 2 / 256;
	munmap(one - PAGE, 3 * PAGE);
	munmap(sixteen - PAGE, 18 * PAGE);
	munmap(many - PAGE, 258 * PAGE);
}

/* ---- TLB shootdown: mprotect RW->RO of a touched page (the flush) with a
 * thread of the mm spinning on the other CPU, against the same with no other
 * thread; only flips during which the spinner ran count.  The spinner
 * timestamps its loop: its gaps during the flips are the receiving side. ---- */
static volatile int spin_stop, spin_ready;
static volatile long spun;
static double gaps[200000];
static volatile int ngaps;

static void *spinner(void *arg)
{
	double last;

	(void)arg;
	pin(cpu_b);
	spin_ready = 1;
	last = now_ns();
	while (!spin_stop) {
		double t = now_ns();

		if (t - last > 300 && t - last < 100000 && ngaps < 200000)
			gaps[ngaps++] = t - last;  /* an interrupt (or a short preemption) */
		last = t;
		spun++;
	}
	return NULL;
}

static double flips[20000];

static double mprotect_ro(char *p, int need_spinner)
{
	int n = 0;

	for (int i = 0; i < 20000; i++) {
		long s0 = spun;
		double t0 = now_ns();

		mprotect(p, PAGE, PROT_READ);
		double t1 = now_ns();

		if (!need_spinner || spun != s0)
			flips[n++] = t1 - t0;
		mprotect(p, PAGE, PROT_READ | PROT_WRITE);
		p[0] = (char)i;  /* the writable PTE is in this CPU's TLB again */
	}
	if (n < 100)
		return -1;
	qsort(flips, n, sizeof flips[0], cmp);
	return flips[n / 2];
}

static double ipi_receive;

static double tlb_ipi(void)
{
	char *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	pthread_t t;

	pin(cpu_a);
	p[0] = 1;
	double alone = mprotect_ro(p, 0);

	spin_stop = spin_ready = 0;
	spun = 0;
	pthread_create(&t, NULL, spinner, NULL);
	while (!spin_ready)
		;
	ngaps = 0;
	double with = mprotect_ro(p, 1);

	spin_stop = 1;
	pthread_join(t, NULL);
	munmap(p, PAGE);
	qsort(gaps, ngaps, sizeof gaps[0], cmp);
	ipi_receive = ngaps ? gaps[ngaps / 2] : -1;
	return with < 0 ? -1 : with - alone;
}

/* ---- page work ---- */
static char *big;
#define BIG (256UL << 20)

/* 256 batches of 1 MiB (256 pages) each, over the whole buffer */
static double clear_page_ns(void)
{
	for (int b = 0; b < 256; b++) {
		char *p = big + b * (BIG / 256);
		double t0 = now_ns();

		for (unsigned long o = 0; o < BIG / 256; o += PAGE)
			memset(p + o, 0, PAGE);
		batch[b] = (now_ns() - t0) / (BIG / 256 / PAGE);
	}
	return low_percentile(batch, 256);
}

static double copy_page_ns(void)
{
	for (int b = 0; b < 128; b++) {
		char *p = big + b * (BIG / 256);
		double t0 = now_ns();

		for (unsigned long o = 0; o < BIG / 256; o += PAGE)
			memcpy(p + o, p + BIG / 2 + o, PAGE);
		batch[b] = (now_ns() - t0) / (BIG / 256 / PAGE);
	}
	return low_percentile(batch, 128);
}

/* one mmap + write-fault every page + munmap, per page */
static double zap_batch[NBATCH];

static double write_fault_cycle(double *zap)
{
	const unsigned long len = 64UL << 20, piece = len / 64;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	madvise(p, len, MADV_NOHUGEPAGE);
	for (int b = 0; b < 64; b++) {
		double t0 = now_ns();

		for (unsigned long o = b * piece; o < (b + 1) * piece; o += PAGE)
			p[o] = 1;
		batch[b] = (now_ns() - t0) / (piece / PAGE);
	}
	for (int b = 0; b < 64; b++) {  /* MADV_DONTNEED piece by piece: the zap alone */
		double t0 = now_ns();

		madvise(p + b * piece, piece, MADV_DONTNEED);
		zap_batch[b] = (now_ns() - t0) / (piece / PAGE);
	}
	munmap(p, len);
	*zap = low_percentile(zap_batch, 64);
	return low_percentile(batch, 64);
}

/* read faults map the shared zero page: trap + walk + PTE, no allocation */
static double read_fault(void)
{
	const unsigned long len = 64UL << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	volatile char sink;
	const unsigned long piece = len / 64;

	madvise(p, len, MADV_NOHUGEPAGE);
	for (int b = 0; b < 64; b++) {
		double t0 = now_ns();

		for (unsigned long o = b * piece; o < (b + 1) * piece; o += PAGE)
			sink = p[o];
		batch[b] = (now_ns() - t0) / (piece / PAGE);
	}
	(void)sink;
	munmap(p, len);
	return low_percentile(batch, 64);
}

/* write faults on a shared mapping of a tmpfs file whose pages are already in
 * the page cache (will-it-scale page_fault3): trap + walk + PTE of a page-cache
 * page + fault_dirty_shared_page(), no allocation */
static double shared_write_fault(void)
{
	const unsigned long len = 64UL << 20, piece = len / 64;
	int fd = (int)syscall(SYS_memfd_create, "calib", 0);
	char *p;

	if (fd < 0 || ftruncate(fd, (off_t)len))
		return -1;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	for (unsigned long o = 0; o < len; o += PAGE)  /* the pages join the page cache */
		p[o] = 1;
	munmap(p, len);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	madvise(p, len, MADV_NOHUGEPAGE);
	for (int b = 0; b < 64; b++) {
		double t0 = now_ns();

		for (unsigned long o = b * piece; o < (b + 1) * piece; o += PAGE)
			p[o] = 2;
		batch[b] = (now_ns() - t0) / (piece / PAGE);
	}
	munmap(p, len);
	close(fd);
	return low_percentile(batch, 64);
}

static double syscall_ns(void)
{
	const int n = 2000;

	for (int b = 0; b < NBATCH; b++) {
		double t0 = now_ns();

		for (int i = 0; i < n; i++)
			syscall(SYS_getppid);
		batch[b] = (now_ns() - t0) / n;
	}
	return low_percentile(batch, NBATCH);
}

static double mmap_pair(void)
{
	const int n = 100;

	for (int b = 0; b < NBATCH; b++) {
		double t0 = now_ns();

		for (int i = 0; i < n; i++) {
			void *p = mmap(NULL, 128UL << 20, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			munmap(p, 128UL << 20);
		}
		batch[b] = (now_ns() - t0) / n;
	}
	return low_percentile(batch, NBATCH);
}

/* machine-wide clearing bandwidth: two threads memset their own 128 MiB */
static void *memset_half(void *arg)
{
	char *p = arg;

	pin(p == big ? cpu_a : cpu_b);
	for (int r = 0; r < 4; r++)
		memset(p, r, BIG / 2);
	return NULL;
}

static double bandwidth(void)
{
	pthread_t t[2];
	double t0 = now_ns();

	pthread_create(&t[0], NULL, memset_half, big);
	pthread_create(&t[1], NULL, memset_half, big + BIG / 2);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	return 4.0 * BIG / (now_ns() - t0);  /* bytes per ns = GB/s */
}

/* ---- what sharing a CPU costs a faulting task beyond the time it does not run ----
 * A child faults a 32 MiB anonymous region page by page and zaps it
 * (MADV_DONTNEED), as pfbench's shared task does, pinned to CPU A: alone for
 * 1 s, then for 1 s beside a second child pinned to the same CPU that loops
 * mmap+munmap of 4 KiB (churn's extra task), the two taking turns at the
 * scheduler tick.  Each run gives the faulting child's faults, its own CPU
 * time and its involuntary context switches; the CPU time it spent beside
 * the other child beyond what its faults cost alone (per CPU-second), over
 * its involuntary switches, is what each turn costs it on coming back. */
struct share_counters {
	volatile unsigned long faults;
	volatile int stop;
};

static void share_fault_loop(struct share_counters *sc)
{
	const unsigned long len = 32UL << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	madvise(p, len, MADV_NOHUGEPAGE);
	while (!sc->stop) {
		for (unsigned long o = 0; o < len; o += PAGE) {
			p[o] = 1;
			sc->faults++;
		}
		madvise(p, len, MADV_DONTNEED);
	}
	_exit(0);
}

static void share_churn_loop(struct share_counters *sc)
{
	while (!sc->stop) {
		void *q = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		munmap(q, PAGE);
	}
	_exit(0);
}

static unsigned long nonvoluntary(pid_t pid)
{
	char path[64], line[128];
	unsigned long n = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "nonvoluntary_ctxt_switches: %lu", &n) == 1)
			break;
	if (f)
		fclose(f);
	return n;
}

static double child_cpu_s(pid_t pid)
{
	clockid_t c;
	struct timespec ts;

	if (clock_getcpuclockid(pid, &c) || clock_gettime(c, &ts))
		return 0;
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One run: the faulting child (with the churn child if ``shared``), 200 ms
 * of warm-up then 1 s measured: its faults, CPU seconds, involuntary switches. */
static void share_run(int shared, double *faults, double *cpu, double *switches)
{
	struct share_counters *sc = mmap(NULL, sizeof *sc, PROT_READ | PROT_WRITE,
					 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t kids[2];
	int n = shared ? 2 : 1;
	unsigned long f0, s0;
	double c0;

	for (int i = 0; i < n; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			pin(cpu_a);
			if (i == 0)
				share_fault_loop(sc);
			share_churn_loop(sc);
		}
	}
	usleep(200000);
	f0 = sc->faults;
	c0 = child_cpu_s(kids[0]);
	s0 = nonvoluntary(kids[0]);
	usleep(1000000);
	*faults = sc->faults - f0;
	*cpu = child_cpu_s(kids[0]) - c0;
	*switches = nonvoluntary(kids[0]) - s0;
	sc->stop = 1;
	for (int i = 0; i < n; i++)
		waitpid(kids[i], NULL, 0);
	munmap(sc, sizeof *sc);
}

static double share_slowdown_pct, share_turn_ms;

static double switch_refill(void)
{
	double fa, ca, sa, fs, cs, ss;

	share_run(0, &fa, &ca, &sa);
	share_run(1, &fs, &cs, &ss);
	share_slowdown_pct = share_turn_ms = 0;
	if (fa <= 0 || ca <= 0 || cs <= 0 || ss < 1)
		return 0;
	/* the CPU time beyond what its faults cost at the rate alone */
	double extra = cs - fs / (fa / ca);

	share_slowdown_pct = 100.0 * (1.0 - (fs / cs) / (fa / ca));
	share_turn_ms = cs * 1e3 / ss;
	return extra > 0 ? extra * 1e9 / ss : 0;
}

int main(int argc, char **argv)
{
	double v[MAXREP], v2[MAXREP], sc;

	for (int k = 1; k < argc; k++) {
		if (!strcmp(argv[k], "--repeats") && k + 1 < argc)
			repeats = atoi(argv[++k]);
		else if (!strcmp(argv[k], "--cpus") && k + 1 < argc)
			sscanf(argv[++k], "%d,%d", &cpu_a, &cpu_b);
		else {
			fprintf(stderr, "calib: usage: calib [--repeats N] [--cpus A,B]\n");
			return 2;
		}
	}
	if (repeats < 1 || repeats > MAXREP) {
		fprintf(stderr, "calib: --repeats wants 1..%d\n", MAXREP);
		return 2;
	}
	big = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		   -1, 0);
	pin(cpu_a);
	for (int r = 0; r < repeats; r++) v[r] = syscall_ns();
	report("syscall_ns", v, repeats, "ns", "getppid(), 400 batches of 2000");
	sc = v[repeats / 2];
	for (int r = 0; r < repeats; r++) v[r] = atomic_local();
	report("atomic_local_ns", v, repeats, "ns", "lock xadd on an owned line, 400 batches of 20000");
	for (int r = 0; r < repeats; r++) v[r] = line_transfer();
	report("line_transfer_ns", v, repeats, "ns",
	       "ping-pong of one line between 2 pinned CPUs, 400 batches of 1000 round trips");
	for (int r = 0; r < repeats; r++) v[r] = context_switch(sc);
	report("context_switch_ns", v, repeats, "ns",
	       "futex ping-pong of 2 threads on one CPU, 400 batches of 20: half a round trip less 2 syscalls");
	{
		double wc[MAXREP];

		for (int r = 0; r < repeats; r++) {
			v[r] = wakeup();
			wc[r] = wake_call_med;
		}
		report("wakeup_ns", v, repeats, "ns",
		       "FUTEX_WAKE to the woken thread running on the other, idle CPU (p10 of 1000)");
		report("wakeup_ipi_ns", wc, repeats, "ns",
		       "the waker's own FUTEX_WAKE call in that test: the wake-up IPI to the idle CPU (median of 1000)");
	}
	for (int r = 0; r < repeats; r++) v[r] = wakeup_after(3000);
	report("wakeup_short_ns", v, repeats, "ns",
	       "FUTEX_WAKE to the woken thread on the other CPU, asleep for ~3 us (p10 of 2000)");
	{
		double wc[MAXREP], ws[MAXREP], wm[MAXREP];

		for (int r = 0; r < repeats; r++) {
			v[r] = wakeup_after(30000);
			wc[r] = wake_call_med;
			ws[r] = 100.0 * wake_spread;
			wm[r] = wake_med;
		}
		report("wakeup_30us_ns", v, repeats, "ns",
		       "the same, asleep for ~30 us (p10 of 2000)");
		report("wakeup_30us_median_ns", wm, repeats, "ns",
		       "the same wake-ups' median (of 2000)");
		report("wakeup_ipi_30us_ns", wc, repeats, "ns",
		       "the waker's own FUTEX_WAKE call in that test: the wake-up IPI to a vCPU "
		       "idle for ~30 us (median of 2000)");
		report("wakeup_spread_pct", ws, repeats, "%",
		       "how much those wake-ups vary: 100 (p90 - p10) / (p90 + p10) of the 2000 latencies");
	}
	{
		double fro[MAXREP], frw[MAXREP], spl[MAXREP], mrg[MAXREP], pte[MAXREP];

		for (int r = 0; r < repeats; r++) {
			mprotect_costs();
			fro[r] = mp_flags_ro;
			frw[r] = mp_flags_rw;
			spl[r] = mp_split;
			mrg[r] = mp_merge;
			pte[r] = mp_pte;
		}
		report("mprotect_flags_ro_ns", fro, repeats, "ns",
		       "mprotect RW->RO of a whole 1-page VMA between PROT_NONE pages (flags only)");
		report("mprotect_flags_rw_ns", frw, repeats, "ns", "the same, RO->RW");
		report("mprotect_split_ns", spl, repeats, "ns",
		       "mprotect RO of the untouched first page of a 16-page VMA (a split)");
		report("mprotect_merge_ns", mrg, repeats, "ns",
		       "mprotect RW of that page again (a merge: one VMA detached and freed)");
		report("change_pte_ns", pte, repeats, "ns",
		       "mprotect RW->RO->RW of a whole touched 256-page VMA, less the flags-only "
		       "flips, per PTE and direction");
	}
	for (int r = 0; r < repeats; r++) {
		v[r] = tlb_ipi();
		v2[r] = ipi_receive;
	}
	report("ipi_send_ns", v, repeats, "ns",
	       "mprotect RW->RO of a touched page: median extra time with a thread of the mm "
	       "running on the other CPU (20000 flips; flips it ran through)");
	report("ipi_receive_ns", v2, repeats, "ns",
	       "that spinning thread's median loop gap during the flips (interrupt entry, "
	       "flush, exit)");
	for (int r = 0; r < repeats; r++) v[r] = clear_page_ns();
	report("clear_page_ns", v, repeats, "ns", "memset 4 KiB pages, 256 batches of 1 MiB over a populated 256 MiB");
	for (int r = 0; r < repeats; r++) v[r] = copy_page_ns();
	report("copy_page_ns", v, repeats, "ns", "memcpy 4 KiB pages, 128 batches of 1 MiB");
	for (int r = 0; r < repeats; r++) v[r] = write_fault_cycle(&v2[r]);
	report("write_fault_ns", v, repeats, "ns",
	       "64 MiB anon, NOHUGEPAGE, 64 batches of 1 MiB: one write fault per page");
	report("zap_page_ns", v2, repeats, "ns", "MADV_DONTNEED of those 64 MiB in 1 MiB pieces, per page");
	for (int r = 0; r < repeats; r++) v[r] = read_fault();
	report("read_fault_ns", v, repeats, "ns",
	       "64 MiB anon, 64 batches of 1 MiB: one read fault per page (zero page)");
	for (int r = 0; r < repeats; r++) v[r] = shared_write_fault();
	report("shared_write_fault_ns", v, repeats, "ns",
	       "64 MiB tmpfs file in the page cache, mapped MAP_SHARED, 64 batches of 1 MiB: one "
	       "write fault per page (page_fault3's fault)");
	for (int r = 0; r < repeats; r++) v[r] = mmap_pair();
	report("mmap_pair_ns", v, repeats, "ns", "mmap+munmap of 128 MiB anon, untouched, 400 batches of 100");
	{
		double turn[MAXREP];

		for (int r = 0; r < repeats; r++) {
			v[r] = switch_refill();
			v2[r] = share_slowdown_pct;
			turn[r] = share_turn_ms;
		}
		report("switch_refill_ns", v, repeats, "ns",
		       "a faulting loop (32 MiB, write + MADV_DONTNEED) beside an mmap+munmap loop "
		       "on its pinned CPU, 1 s each way: its CPU time beyond its faults' cost "
		       "alone, per involuntary switch");
		report("share_slowdown_pct", v2, repeats, "%",
		       "that loop's faults per own CPU-second beside the other, below alone");
		report("share_turn_ms", turn, repeats, "ms",
		       "its CPU time per involuntary switch: one turn (the slice, ended at a tick)");
	}
	for (int r = 0; r < repeats; r++) v[r] = bandwidth();
	report("mem_bandwidth_gbps", v, repeats, "GB/s",
	       "two pinned threads memset their own 128 MiB four times");
	return 0;
}
