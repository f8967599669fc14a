//! Data parallelism on one machine: a batch split into contiguous shards, each computed on its own thread.
//!
//! flex, the CPU backend, keeps about one core busy on these small models; computing shards of a batch side by
//! side uses the others (1.5x faster on the 2-core VM for SFT).

/// Splits `items` into at most `shards` contiguous parts of equal size (the last one shorter), runs `f` on
/// each on its own scoped thread and returns the results in order; the first error wins, and a panic in a
/// shard resumes on the caller's thread. One shard (or one item) runs on the caller's thread.
pub fn map_shards<T, R, E>(items: &[T], shards: usize, f: impl Fn(&[T]) -> Result<R, E> + Sync) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let shards = shards.clamp(1, items.len().max(1));
    if shards == 1 {
        return Ok(vec![f(items)?]);
    }
    let size = items.len().div_ceil(shards);
    let f = &f;
    let results: Vec<Result<R, E>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items.chunks(size).map(|part| scope.spawn(move || f(part))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_contiguous_in_order_and_errors_and_panics_surface() {
        let items: Vec<u32> = (0..10).collect();
        let parts = map_shards(&items, 3, |part| Ok::<_, ()>(part.to_vec())).unwrap();
        assert_eq!(parts, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert_eq!(map_shards(&items, 1, |part| Ok::<_, ()>(part.len())).unwrap(), vec![10]);
        assert_eq!(map_shards(&items[..2], 8, |part| Ok::<_, ()>(part.len())).unwrap(), vec![1, 1]);
        assert_eq!(map_shards(&items, 2, |part| if part[0] == 5 { Err("bad") } else { Ok(0) }), Err("bad"));
        let panicked = std::panic::catch_unwind(|| map_shards(&items, 2, |_| -> Result<(), ()> { panic!("boom") }));
        assert!(panicked.is_err());
    }
}
