//! Heap allocations remora makes per proxied request, with the whole policy
//! stack on (issue 15: "allocation count per request measured and brought
//! down"). A counting allocator wraps the system one; the same client sends
//! the same requests straight to the backend and through an in-process
//! remora, and the difference per request is remora's. The bounds are the
//! figures measured when the test was written plus a margin, so a change
//! that adds allocations to every request fails here.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};

use support::backend::http_backend;
use support::client::http_client;
use support::config::TestConfig;
use support::proxy::Proxy;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Most allocations remora may add to one HTTP/1.1 request, and to one h2c
/// request.
const HTTP1_BOUND: f64 = 70.0;
const H2C_BOUND: f64 = 75.0;

/// Requests measured per target, after as many to warm up.
const REQUESTS: u64 = 2000;

/// Allocations per request of sequential GETs to `url` over one pooled
/// client connection.
async fn allocations_per_request(version: Version, url: &str) -> f64 {
    let client = http_client::<Empty<Bytes>>(version);
    let get = || async {
        let request = Request::get(url).body(Empty::new()).unwrap();
        let response = client.request(request).await.unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.into_body().collect().await.unwrap();
    };
    for _ in 0..REQUESTS {
        get().await;
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..REQUESTS {
        get().await;
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / REQUESTS as f64
}

/// remora's allocations per request over `protocol` (client and upstream
/// alike), every policy layer configured and none of them triggered.
async fn proxy_allocations(protocol: &str, version: Version) -> f64 {
    let backend = http_backend("alloc");
    let yaml = TestConfig::one_upstream("alloc", protocol, [backend.addr])
        .with("timeouts", "{ request: 10s }")
        .with("retries", "{ attempts: 2 }")
        .with("rate_limit", "{ requests_per_second: 1000000 }")
        .with("circuit_breaker", "{ consecutive_failures: 5 }")
        .with("outlier_detection", "{ consecutive_failures: 5 }")
        .with("max_concurrent_requests", 1000)
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    let direct = allocations_per_request(version, &backend.url("/")).await;
    let through =
        allocations_per_request(version, &format!("http://{}/", proxy.upstream("alloc"))).await;
    let added = through - direct;
    eprintln!(
        "{protocol}: {direct:.1} allocations per request direct, {through:.1} through remora: {added:.1} added"
    );
    added
}

/// One test: the counter is the process's, so nothing else may run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_allocate_within_the_bound() {
    let http1 = proxy_allocations("http", Version::HTTP_11).await;
    let h2c = proxy_allocations("http2", Version::HTTP_2).await;
    assert!(
        http1 <= HTTP1_BOUND,
        "HTTP/1.1: {http1:.1} allocations per request"
    );
    assert!(h2c <= H2C_BOUND, "h2c: {h2c:.1} allocations per request");
}
