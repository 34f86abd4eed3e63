// SPDX-License-Identifier: MIT
/*
 * treefill: how the VMA tree's leaf around a new mapping decides what an
 * mmap/munmap pair costs.
 *
 *   make -C bench/real && bench/real/treefill [--max N] [--ms MS | --pairs P]
 *
 * For each n from 0 to --max (default 24), a forked child first makes n
 * small mappings that cannot merge (4 KiB, PROT_NONE and PROT_READ in turn),
 * then loops mmap + munmap of 128 MiB anonymous memory (will-it-scale's
 * mmap1 without the touch) for --ms milliseconds (default 300) and reports
 * the pairs per second (--pairs P: P pairs instead, bounded by work: the
 * test suite's smoke run).  Each extra mapping adds entries to the leaf of the
 * maple tree the 128 MiB region lands in; when that leaf has no room left,
 * every mmap splits it and the munmap rebalances it again (mas_wr_bnode,
 * mas_spanning_rebalance), and the pair's rate drops.  Output: one line,
 * "n:pairs_per_s" for every n.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static double pairs_per_s(int extra, double seconds, long pairs)
{
	const size_t len = 128UL << 20;
	unsigned long n = 0;
	double t0;

	for (int i = 0; i < extra; i++)
		if (mmap(NULL, 4096, i % 2 ? PROT_READ : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0) == MAP_FAILED)
			return -1;
	t0 = now_s();
	while (pairs ? (long)n < pairs : now_s() - t0 < seconds) {
		for (int k = 0; k < 100; k++) {
			void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				       -1, 0);

			if (p == MAP_FAILED)
				return -1;
			munmap(p, len);
		}
		n += 100;
	}
	return n / (now_s() - t0);
}

int main(int argc, char **argv)
{
	int max = 24;
	double ms = 300;
	long pairs = 0;

	for (int k = 1; k < argc; k++) {
		char *end = NULL;

		if (!strcmp(argv[k], "--max") && k + 1 < argc)
			max = (int)strtol(argv[++k], &end, 10);
		else if (!strcmp(argv[k], "--ms") && k + 1 < argc)
			ms = strtod(argv[++k], &end);
		else if (!strcmp(argv[k], "--pairs") && k + 1 < argc)
			pairs = strtol(argv[++k], &end, 10);
		if (end == NULL || end == argv[k] || *end) {
			fprintf(stderr, "treefill: usage: treefill [--max N] [--ms MS | --pairs P]\n");
			return 2;
		}
	}
	if (max < 0 || max > 10000 || ms <= 0 || pairs < 0) {
		fprintf(stderr, "treefill: --max wants 0..10000, --ms a positive number, --pairs "
			"a count\n");
		return 2;
	}
	for (int n = 0; n <= max; n++) {
		int fd[2];
		double r = -1;
		pid_t pid;

		if (pipe(fd)) {
			perror("treefill: pipe");
			return 1;
		}
		pid = fork();
		if (pid < 0) {
			perror("treefill: fork");
			return 1;
		}
		if (pid == 0) {
			r = pairs_per_s(n, ms / 1e3, pairs);
			if (write(fd[1], &r, sizeof r) != sizeof r)
				_exit(1);
			_exit(0);
		}
		if (read(fd[0], &r, sizeof r) != sizeof r)
			r = -1;
		waitpid(pid, NULL, 0);
		close(fd[0]);
		close(fd[1]);
		printf("%s%d:%.0f", n ? " " : "", n, r);
		fflush(stdout);
	}
	printf("\n");
	return 0;
}
