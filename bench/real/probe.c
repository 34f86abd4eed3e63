/*
 * probe: run one pervma workload on the real kernel and print one CSV row in
 * the simulator's long form (the columns of pervma.sim.results.to_csv).
 *
 *   probe [--mode threads|processes] [--tasks N] [--duration-ms D]
 *         [--warmup-ms W] [--cycles N] [--machine NAME] [--no-header] [--pin]
 *         $(pervma simulate WORKLOAD --emit-probe-args)
 *
 * The workload arrives as the flattened key=value words pervma writes
 * (name, unit, region, backing, sharing, layout, touch, stride, first_pass,
 * end, nohugepage, resident, lead_page, extra=kind:size:offset ...), with the
 * meaning README's "Workload files" gives them.  Each measured task loops
 * over its cycle ((mmap,) touch, munmap / MADV_DONTNEED / nothing); extra
 * tasks loop over mmap+munmap, mprotect RO/RW of the shared region's range,
 * or a read of /proc/self/maps.  Threads mode: pthreads of one process;
 * processes mode: fork()ed children.  --pin binds task i (measured tasks
 * first, then the extra ones) to CPU i modulo the online CPUs, as
 * will-it-scale binds its tasks; without it the scheduler places them.  Counters live in a shared mapping, one
 * cache line per task.
 *
 * Timing: the tasks start together, run --warmup-ms, then the counters are
 * read at the start and the end of a --duration-ms window (CLOCK_MONOTONIC).
 * --cycles N instead runs every measured task for N cycles and times that
 * (bounded by work, not time: the test suite's smoke run).  Columns the real
 * kernel cannot give (lock waits, latencies) are left empty; ipis is the
 * change of /proc/interrupts' TLB row (shootdown IPIs received, all CPUs).
 * Two columns follow the long form: cpu_s, the CPU seconds the tasks got in
 * the window, and runq_s, the seconds they spent runnable but waiting for a
 * CPU (schedstat's run delay, summed over tasks): on a machine shared with
 * other jobs, bench/real/validate.py takes runq_s / tasks off the window.
 * Then sleeps (the measured tasks' voluntary context switches) and
 * extra_cpu_s, the CPU seconds the extra tasks got (their own CPU clocks):
 * where the tasks outnumber the CPUs, how the CPUs were shared.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MAX_TASKS 256
#define MAX_EXTRAS 8

enum { EXTRA_CHURN, EXTRA_MPROTECT, EXTRA_MAPS };

struct extra { int kind; unsigned long size, offset; };

static struct spec {
	char name[80];
	int pairs;               /* unit = pairs: one op per cycle */
	unsigned long region, stride;
	char backing[8];         /* anon, file, memfd, shmem */
	int shared;              /* sharing = shared */
	int slice;               /* layout = slice */
	int touch;               /* 0 none, 1 read, 2 write */
	int random_first;
	int end;                 /* 0 munmap, 1 dontneed, 2 none */
	int nohugepage, resident, lead_page;
	int nextras;
	struct extra extras[MAX_EXTRAS];
} W;

struct slot {                    /* one cache line per task */
	volatile unsigned long ops, cycles, churn, done;
	volatile unsigned long sleeps;  /* voluntary context switches, at its last cycle's end */
	char pad[64 - 5 * sizeof(unsigned long)];
} __attribute__((aligned(64)));

struct shared {
	volatile int go, stop, ready;
	char pad[64 - 3 * sizeof(int)];
	struct slot t[MAX_TASKS];
};

static struct shared *S;
static int ntasks = 1, threads_mode = 1;
static int pin;                  /* --pin: task i runs on CPU i % (online CPUs) */
static long max_cycles;          /* --cycles: stop each measured task after this many */
static char *region_of_mm;       /* threads mode: the one shared region */

static void die(const char *what)
{
	fprintf(stderr, "probe: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(const char *msg, const char *arg)
{
	fprintf(stderr, "probe: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
	exit(2);
}

static unsigned long number(const char *s, const char *key)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (*s == '-')
		usage("negative value for", key);
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end)
		usage("not a number for", key);
	return v;
}

static void parse_kv(char *kv)
{
	char *v = strchr(kv, '=');

	if (!v)
		usage("expected key=value, got", kv);
	*v++ = 0;
	if (!strcmp(kv, "name")) snprintf(W.name, sizeof W.name, "%s", v);
	else if (!strcmp(kv, "unit")) W.pairs = !strcmp(v, "pairs");
	else if (!strcmp(kv, "region")) W.region = number(v, kv);
	else if (!strcmp(kv, "stride")) W.stride = number(v, kv);
	else if (!strcmp(kv, "backing")) snprintf(W.backing, sizeof W.backing, "%s", v);
	else if (!strcmp(kv, "sharing")) W.shared = !strcmp(v, "shared");
	else if (!strcmp(kv, "layout")) W.slice = !strcmp(v, "slice");
	else if (!strcmp(kv, "touch")) W.touch = !strcmp(v, "write") ? 2 : !strcmp(v, "read") ? 1 : 0;
	else if (!strcmp(kv, "first_pass")) W.random_first = !strcmp(v, "random");
	else if (!strcmp(kv, "end")) W.end = !strcmp(v, "munmap") ? 0 : !strcmp(v, "dontneed") ? 1 : 2;
	else if (!strcmp(kv, "nohugepage")) W.nohugepage = number(v, kv) != 0;
	else if (!strcmp(kv, "resident")) W.resident = number(v, kv) != 0;
	else if (!strcmp(kv, "lead_page")) W.lead_page = number(v, kv) != 0;
	else if (!strcmp(kv, "extra")) {
		struct extra *e = &W.extras[W.nextras];
		char kind[32];

		if (W.nextras == MAX_EXTRAS)
			usage("too many extra tasks", NULL);
		if (sscanf(v, "%31[^:]:%lu:%lu", kind, &e->size, &e->offset) != 3)
			usage("extra wants kind:size:offset, got", v);
		if (!strcmp(kind, "mmap-churn")) e->kind = EXTRA_CHURN;
		else if (!strcmp(kind, "mprotect")) e->kind = EXTRA_MPROTECT;
		else if (!strcmp(kind, "maps-reader")) e->kind = EXTRA_MAPS;
		else usage("unknown extra task", kind);
		W.nextras++;
	} else
		usage("unknown key", kv);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(double ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)((ms - 1000 * (long)(ms / 1000)) * 1e6) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* A file of npages for a file or memfd backing: tmpfs (/dev/shm), as the
 * model's shmem file; resident: its pages written once, so in the page cache. */
static int backing_fd(unsigned long len)
{
	int fd;

	if (!strcmp(W.backing, "memfd")) {
		fd = (int)syscall(SYS_memfd_create, "probe", 0);
	} else if (!strcmp(W.backing, "file")) {
		char path[] = "/dev/shm/pervma-probe.XXXXXX";

		fd = mkstemp(path);
		if (fd >= 0)
			unlink(path);
	} else
		return -1;
	if (fd < 0)
		die("backing file");
	if (ftruncate(fd, (off_t)len))
		die("ftruncate");
	if (W.resident) {
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

		if (p == MAP_FAILED)
			die("mmap file");
		for (unsigned long o = 0; o < len; o += PAGE)
			p[o] = 0;
		munmap(p, len);
	}
	return fd;
}

static int map_flags(void)
{
	if (!strcmp(W.backing, "anon"))
		return MAP_PRIVATE | MAP_ANONYMOUS;
	if (!strcmp(W.backing, "shmem"))
		return MAP_SHARED | MAP_ANONYMOUS;
	return W.shared ? MAP_SHARED : MAP_PRIVATE;
}

static char *new_region(unsigned long len, int fd)
{
	char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, map_flags(), fd, 0);

	if (a == MAP_FAILED)
		die("mmap");
	if (W.nohugepage)
		madvise(a, len, MADV_NOHUGEPAGE);
	return a;
}

static unsigned long slice_len(void)
{
	return W.region * ntasks + (W.lead_page ? PAGE : 0);
}

struct arg { int i; int fd; char *region; };

static void measured(struct arg *a)
{
	struct slot *me = &S->t[a->i];
	unsigned long start = 0, size = W.region;
	char *r = NULL;

	if (W.touch && W.random_first) {
		unsigned int seed = 12345u + a->i;

		start = (unsigned long)rand_r(&seed) % (size / W.stride) * W.stride;
	}
	if (W.slice)
		r = a->region + (W.lead_page ? PAGE : 0) + a->i * W.region;
	else if (W.end != 0)
		r = new_region(size, a->fd);
	__atomic_add_fetch(&S->ready, 1, __ATOMIC_SEQ_CST);
	while (!S->go)
		;
	while (!S->stop) {
		if (W.end == 0)
			r = new_region(size, a->fd);
		for (unsigned long o = start; W.touch && o < size && !S->stop; o += W.stride) {
			if (W.touch == 2)
				*(volatile char *)(r + o) = 1;
			else if (W.touch == 1)
				(void)*(volatile char *)(r + o);
			if (!W.pairs)
				me->ops++;
		}
		start = 0;
		if (W.end == 0)
			munmap(r, size);
		else if (W.end == 1)
			madvise(r, size, MADV_DONTNEED);
		if (W.pairs)
			me->ops++;
		me->cycles++;
		struct rusage ru;
		if (!getrusage(RUSAGE_THREAD, &ru))
			me->sleeps = ru.ru_nvcsw;
		if (max_cycles && (long)me->cycles >= max_cycles)
			break;
	}
	me->done = 1;
}

static void extra(struct arg *a)
{
	struct extra *e = &W.extras[a->i - ntasks];
	struct slot *me = &S->t[a->i];
	char buf[65536];

	__atomic_add_fetch(&S->ready, 1, __ATOMIC_SEQ_CST);
	while (!S->go)
		;
	while (!S->stop) {
		if (e->kind == EXTRA_CHURN) {
			char *p = mmap(NULL, e->size, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				die("mmap");
			munmap(p, e->size);
		} else if (e->kind == EXTRA_MPROTECT) {
			if (mprotect(a->region + e->offset, e->size, PROT_READ) ||
			    mprotect(a->region + e->offset, e->size, PROT_READ | PROT_WRITE))
				die("mprotect");
		} else {
			int fd = open("/proc/self/maps", O_RDONLY);

			if (fd < 0)
				die("/proc/self/maps");
			while (read(fd, buf, sizeof buf) > 0)
				;
			close(fd);
		}
		me->churn++;
	}
}

static void *task(void *p)
{
	struct arg *a = p;

	if (pin) {  /* as will-it-scale binds its tasks: one CPU each, round robin */
		cpu_set_t set;
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		CPU_ZERO(&set);
		CPU_SET((int)(a->i % (n > 0 ? n : 1)), &set);
		if (sched_setaffinity(0, sizeof set, &set))
			die("sched_setaffinity");
	}
	if (a->i < ntasks)
		measured(a);
	else
		extra(a);
	return NULL;
}

static unsigned long tlb_ipis(void)
{
	FILE *f = fopen("/proc/interrupts", "r");
	char line[4096];
	unsigned long sum = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof line, f)) {
		char *p = line;

		while (*p == ' ')
			p++;
		if (strncmp(p, "TLB:", 4))
			continue;
		p += 4;
		for (;;) {
			char *end;
			unsigned long v = strtoul(p, &end, 10);

			if (end == p)
				break;
			sum += v;
			p = end;
		}
	}
	fclose(f);
	return sum;
}

/* CPU time of the tasks so far: the probe process (threads mode: the main
 * thread mostly sleeps) or the sum of the children's CPU clocks. */
static double cpu_s(pid_t *pids, int n)
{
	struct timespec ts;
	double sum = 0;

	if (threads_mode) {
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
		return ts.tv_sec + ts.tv_nsec / 1e9;
	}
	for (int i = 0; i < n; i++) {
		clockid_t c;

		if (!clock_getcpuclockid(pids[i], &c) && !clock_gettime(c, &ts))
			sum += ts.tv_sec + ts.tv_nsec / 1e9;
	}
	return sum;
}

/* CPU time of the extra tasks (those from ``ntasks`` on) so far: each
 * thread's or child's own CPU clock. */
static double extra_cpu_s(pthread_t *tids, pid_t *pids, int total)
{
	struct timespec ts;
	double sum = 0;

	for (int i = ntasks; i < total; i++) {
		clockid_t c;
		int err = threads_mode ? pthread_getcpuclockid(tids[i], &c)
				       : clock_getcpuclockid(pids[i], &c);

		if (!err && !clock_gettime(c, &ts))
			sum += ts.tv_sec + ts.tv_nsec / 1e9;
	}
	return sum;
}

/* Run-queue delay (ns) of the tasks so far: field 2 of schedstat, the time
 * they were runnable but another task (here: mostly other jobs) ran. */
static double runq_s(pid_t *pids, int n)
{
	char path[64];
	double sum = 0;
	unsigned long long run, wait;

	if (threads_mode) {
		DIR *d = opendir("/proc/self/task");
		struct dirent *e;

		if (!d)
			return 0;
		while ((e = readdir(d))) {
			FILE *f;

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof path, "/proc/self/task/%.16s/schedstat", e->d_name);
			f = fopen(path, "r");
			if (f && fscanf(f, "%llu %llu", &run, &wait) == 2)
				sum += wait / 1e9;
			if (f)
				fclose(f);
		}
		closedir(d);
		return sum;
	}
	for (int i = 0; i < n; i++) {
		FILE *f;

		snprintf(path, sizeof path, "/proc/%d/schedstat", (int)pids[i]);
		f = fopen(path, "r");
		if (f && fscanf(f, "%llu %llu", &run, &wait) == 2)
			sum += wait / 1e9;
		if (f)
			fclose(f);
	}
	return sum;
}

static void totals(unsigned long *ops, unsigned long *churn, unsigned long *cyc)
{
	*ops = *churn = 0;
	for (int i = 0; i < ntasks + W.nextras; i++) {
		if (i < ntasks) {
			ops[0] += S->t[i].ops;
			cyc[i] = S->t[i].cycles;
		} else
			*churn += S->t[i].churn;
	}
}

/* Voluntary context switches of the measured tasks (each records its own at
 * the end of every cycle): how often they slept, e.g. on mmap_lock. */
static unsigned long sleeps_total(void)
{
	unsigned long sum = 0;

	for (int i = 0; i < ntasks; i++)
		sum += S->t[i].sleeps;
	return sum;
}

int main(int argc, char **argv)
{
	double duration = 1000, warmup = 200;
	const char *machine = NULL;
	int header = 1, total;
	char host[64];

	W.stride = PAGE;
	for (int k = 1; k < argc; k++) {
		const char *a = argv[k];

		if (!strcmp(a, "--mode") && k + 1 < argc) {
			a = argv[++k];
			if (strcmp(a, "threads") && strcmp(a, "processes"))
				usage("--mode wants threads or processes, got", a);
			threads_mode = !strcmp(a, "threads");
		} else if (!strcmp(a, "--tasks") && k + 1 < argc)
			ntasks = (int)number(argv[++k], "--tasks");
		else if (!strcmp(a, "--duration-ms") && k + 1 < argc)
			duration = (double)number(argv[++k], "--duration-ms");
		else if (!strcmp(a, "--warmup-ms") && k + 1 < argc)
			warmup = (double)number(argv[++k], "--warmup-ms");
		else if (!strcmp(a, "--cycles") && k + 1 < argc)
			max_cycles = (long)number(argv[++k], "--cycles");
		else if (!strcmp(a, "--machine") && k + 1 < argc)
			machine = argv[++k];
		else if (!strcmp(a, "--no-header"))
			header = 0;
		else if (!strcmp(a, "--pin"))
			pin = 1;
		else if (a[0] == '-')
			usage("unknown option", a);
		else
			parse_kv(argv[k]);
	}
	if (!W.name[0] || !W.region || !W.backing[0])
		usage("no workload: pass the words of pervma simulate WORKLOAD --emit-probe-args", NULL);
	if (!W.stride || W.stride % PAGE || W.region % PAGE || W.stride > W.region)
		usage("region and stride must be whole pages, stride at most region", NULL);
	if (ntasks < 1 || ntasks + W.nextras > MAX_TASKS || duration <= 0)
		usage("--tasks and --duration-ms must be positive (at most 256 tasks)", NULL);
	if (!machine) {
		gethostname(host, sizeof host);
		host[sizeof host - 1] = 0;
		machine = host;
	}
	total = ntasks + W.nextras;
	S = mmap(NULL, sizeof *S, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (S == MAP_FAILED)
		die("mmap counters");

	static struct arg args[MAX_TASKS];
	static pthread_t tids[MAX_TASKS];
	static pid_t pids[MAX_TASKS];

	for (int i = 0; i < total; i++) {
		args[i].i = i;
		args[i].fd = -1;
		if (i < ntasks && !W.slice)  /* own file per task, made before the run */
			args[i].fd = backing_fd(W.region);
	}
	if (threads_mode) {
		if (W.slice) {
			region_of_mm = new_region(slice_len(), backing_fd(slice_len()));
			for (int i = 0; i < total; i++)
				args[i].region = region_of_mm;
		}
		for (int i = 0; i < total; i++)
			if (pthread_create(&tids[i], NULL, task, &args[i]))
				die("pthread_create");
	} else {
		for (int i = 0; i < total; i++) {
			pids[i] = fork();
			if (pids[i] < 0)
				die("fork");
			if (pids[i] == 0) {
				if (W.slice)  /* each process's own region, the whole length */
					args[i].region = new_region(slice_len(), backing_fd(slice_len()));
				task(&args[i]);
				_exit(0);
			}
		}
	}
	while (S->ready < total)
		sleep_ms(1);

	unsigned long ops0 = 0, ops1 = 0, churn0, churn1, ipi0, ipi1, sl0 = 0, sl1;
	static unsigned long cyc0[MAX_TASKS], cyc1[MAX_TASKS];
	double t0, t1, c0 = 0, c1, q0 = 0, q1, x0 = 0, x1;

	S->go = 1;
	if (max_cycles) {
		t0 = now_s();
		ipi0 = tlb_ipis();
		for (int i = 0; i < ntasks; i++)
			while (!S->t[i].done)
				sleep_ms(0.2);
		for (int i = ntasks; i < total; i++)  /* and one loop of every extra task */
			while (!S->t[i].churn)
				sleep_ms(0.2);
		t1 = now_s();
		ipi1 = tlb_ipis();
		c1 = cpu_s(pids, total);
		q1 = runq_s(pids, total);
		x1 = extra_cpu_s(tids, pids, total);
		totals(&ops1, &churn1, cyc1);
		sl1 = sleeps_total();
		churn0 = 0;
	} else {
		sleep_ms(warmup);
		totals(&ops0, &churn0, cyc0);
		sl0 = sleeps_total();
		ipi0 = tlb_ipis();
		c0 = cpu_s(pids, total);
		q0 = runq_s(pids, total);
		x0 = extra_cpu_s(tids, pids, total);
		t0 = now_s();
		sleep_ms(duration);
		totals(&ops1, &churn1, cyc1);
		sl1 = sleeps_total();
		t1 = now_s();
		c1 = cpu_s(pids, total);
		q1 = runq_s(pids, total);
		x1 = extra_cpu_s(tids, pids, total);
		ipi1 = tlb_ipis();
	}
	S->stop = 1;
	if (threads_mode) {
		for (int i = 0; i < total; i++)
			pthread_join(tids[i], NULL);
	} else {
		for (int i = 0; i < total; i++)
			waitpid(pids[i], NULL, 0);
	}

	double win = t1 - t0;
	unsigned long whole = 0;
	int capped = 0;

	for (int i = 0; i < ntasks; i++) {
		unsigned long d = cyc1[i] - cyc0[i];

		whole += max_cycles ? d : (d > 0 ? d - 1 : 0);
		capped |= !max_cycles && d < 2;
	}
	if (header)
		printf("workload,preset,machine,kind,tasks,faults_per_s,churn_ops_per_s,sim_ms,"
		       "lat_p50_us,lat_p90_us,lat_p99_us,lat_max_us,mmap_lock_read_wait_ms,"
		       "mmap_lock_write_wait_ms,vma_lock_wait_ms,other_wait_ms,io_ms,"
		       "line_transfer_ms,line_wait_ms,tlb_shootdowns,tlb_ms,ipis,mem_bw_wait_ms,"
		       "zone_wait_ms,fallbacks,seed,simulated_tasks,steps,wall_s,cycles,capped,cpu_s,runq_s,"
		       "sleeps,extra_cpu_s\n");
	printf("%s,real,%s,%s,%d,%.6g,%.6g,%.6g,,,,,,,,,,,,,,%lu,,,,,%d,,%.6g,%lu,%s,%.6g,%.6g,%lu,"
	       "%.6g\n",
	       W.name, machine, threads_mode ? "threads" : "processes", ntasks,
	       (ops1 - ops0) / win, (churn1 - churn0) / win, win * 1e3, ipi1 - ipi0, ntasks,
	       win, whole, capped ? "True" : "False", c1 - c0, q1 - q0, sl1 - sl0, x1 - x0);
	return 0;
}
