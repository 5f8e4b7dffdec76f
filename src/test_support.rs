//! Helpers shared by unit tests.

use std::future::Future;

/// Runs `test` to completion on a fresh glommio executor of its own thread; a panic inside it
/// fails the calling test.
pub fn run_local<G, F>(test: G)
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(test)
        .expect("executor starts")
        .join()
        .expect("test body does not panic");
}

/// (topic, partition, fetch offset) of every partition of a Fetch request's topics, in order.
pub fn listed_fetch_partitions(
    topics: &[kafka_protocol::messages::fetch_request::FetchTopic],
) -> Vec<(String, i32, i64)> {
    topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| {
                (
                    topic.topic.0.to_string(),
                    partition.partition,
                    partition.fetch_offset,
                )
            })
        })
        .collect()
}
