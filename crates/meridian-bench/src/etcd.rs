//! The two etcd v3 RPCs the benchmark needs, KV.Put and Maintenance.Status,
//! as hand-written prost messages with etcd's field numbers
//! (etcdserver/etcdserverpb/rpc.proto). Written out rather than generated:
//! meridian-proto holds Meridian's own APIs only, and a subset this small is
//! easier to check against etcd's proto by eye than a vendored file.

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Status;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    /// Member id of the leader, as this member sees it.
    #[prost(uint64, tag = "4")]
    pub leader: u64,
}

pub struct KvClient {
    inner: tonic::client::Grpc<Channel>,
}

impl KvClient {
    pub fn new(ch: Channel) -> KvClient {
        KvClient {
            inner: tonic::client::Grpc::new(ch),
        }
    }

    pub async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<PutResponse, Status> {
        unary(
            &mut self.inner,
            "/etcdserverpb.KV/Put",
            PutRequest { key, value },
        )
        .await
    }
}

/// Maintenance.Status of the member behind `ch`.
pub async fn status(ch: Channel) -> Result<StatusResponse, Status> {
    let mut g = tonic::client::Grpc::new(ch);
    unary(&mut g, "/etcdserverpb.Maintenance/Status", StatusRequest {}).await
}

async fn unary<Req, Resp>(
    g: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    req: Req,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    g.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    g.unary(
        tonic::Request::new(req),
        PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|r| r.into_inner())
}
