//! DNS for containers, with Mesos-DNS's names: the zone is built by `compile` (see [`zone`]),
//! answered per query from the live table (see [`answer`]), served over UDP and TCP on one port,
//! with names outside the zone relayed to upstream resolvers (see [`server`]).

pub mod answer;
pub mod fast;
pub mod names;
pub mod server;
pub mod udp_batch;
pub mod zone;
