//! Integration tests against the real stack (`scripts/stack.sh up`): Kafka, PostgreSQL, Redis.
//! Each test makes its own topic, consumer group, database and Redis key prefix.

mod api;
mod cardinality;
mod dashboard;
mod edges;
mod embedded;
mod embedded_write;
mod generate;
mod ground_truth;
mod grpc;
mod helpers;
mod http_ingest;
mod ingest;
mod loghub;
mod multi_topic;
mod observability;
mod protocols;
mod ranking;
mod search;
mod search_cases;
mod search_sqlite;
mod smoke;
mod sqlite_read;
mod static_membership;
mod store_robust;
mod summary;
mod tail;
