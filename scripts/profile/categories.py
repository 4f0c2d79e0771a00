#!/usr/bin/env python3
"""Splits a `perf script -F comm,tid,ip,sym --no-inline` output into
categories of the per-request stack (the first category found walking
each sample from its leaf), as shares of the samples and, given the CPU
per request in µs, as µs per request.

usage: categories.py SCRIPT [US_PER_REQUEST]"""
import collections, re, sys

CATEGORIES = [
    ('log', r'tracing_core::event::Event::dispatch|log_writer'),
    ('parts-drop', r'drop_in_place<http::request::Parts>'),
    ('handler', r'Handler<'),
    ('metrics', r'metrics::http_request|prometheus'),
    ('reqid', r'RequestId::new'),
    ('writev', r'writev'),
    ('recv', r'__libc_recv'),
    ('epoll', r'epoll_wait'),
    ('futex', r'futex'),
    ('nest', r'strip_prefix|SetNestedPath|NestedPath|StripPrefix'),
    ('routing', r'call_with_state|matchit|set_matched_path|Router'),
    ('h1-parse', r'Http1Transaction>::parse'),
    ('h1-encode', r'Http1Transaction>::encode'),
    ('timers', r'Sleep|time::wheel|reregister|TimedIo'),
    ('middleware', r'request_id::|from_fn'),
    ('hyper', r'hyper::'),
    ('tokio', r'tokio::runtime'),
]


def samples(path):
    current = None
    for line in open(path, errors='replace'):
        if not line.strip():
            if current is not None:
                yield current
            current = None
        elif not line.startswith('\t'):
            current = []
        elif current is not None:
            parts = line.strip().split(' ', 1)
            current.append(parts[1] if len(parts) > 1 else '?')
    if current:
        yield current


def main():
    compiled = [(name, re.compile(rx)) for name, rx in CATEGORIES]
    counts = collections.Counter()
    for frames in samples(sys.argv[1]):
        name = 'other'
        for frame in frames:
            hit = next((n for n, rx in compiled if rx.search(frame)), None)
            if hit:
                name = hit
                break
        counts[name] += 1
    total = sum(counts.values())
    us = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    for name, n in counts.most_common():
        print(f'{name:12s} {100 * n / total:5.1f}%  {us * n / total:5.2f} µs')


if __name__ == '__main__':
    main()
