//! DNS for containers, with Mesos-DNS's names: the zone is built beside the routing table by the
//! control plane (`crate::zone`) and published in the snapshot; here it is answered per query
//! (see [`answer`], and [`fast`] for the plain A/AAAA query), served over UDP and TCP on one
//! port, with names outside the served zones relayed to upstream resolvers (see [`server`]).

pub mod answer;
pub mod edns;
pub mod fast;
pub mod http_api;
pub mod limits;
pub mod metrics;
pub mod relay;
pub mod rrl;
pub mod server;
pub mod udp_batch;
