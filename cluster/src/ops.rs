//! The blocking calls' etcd work (run on the private runtime under a timeout).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use crate::keys::{self, State};
use crate::{ClusterView, EndpointRecord, Error, NetworkRecord, Shared, lock};

/// How many times a lost race is retried before giving up with [`Error::Conflict`].
const RACE_RETRIES: usize = 8;
/// How many VNIs one network creation tries (each lost race means another network got one).
const VNI_TRIES: usize = 32;
/// How many addresses one allocation tries before giving up with [`Error::Conflict`].
const ALLOC_TRIES: usize = 64;

/// Where a put-if-mine landed.
pub(crate) enum Owned {
    /// The record is stored, under this host's lease.
    Stored,
    /// Another host holds the key (its name).
    Other(String),
}

/// The first key/value of a Txn's `or_else` get, if any.
fn txn_get(resp: &etcd_client::TxnResponse) -> Option<etcd_client::KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}

/// Reads and decodes a network record.
async fn network(
    sh: &Shared,
    client: &mut Client,
    name: &str,
) -> Result<Option<(NetworkRecord, i64)>, Error> {
    let key = sh.keys.network(name);
    let resp = client
        .get(key.as_str(), None)
        .await
        .map_err(|e| sh.unavailable(e))?;
    let Some(kv) = resp.kvs().first() else {
        return Ok(None);
    };
    let rec: NetworkRecord = serde_json::from_slice(kv.value()).map_err(|e| {
        Error::Invalid(format!(
            "the cluster's record of network {name:?} is unreadable ({e}): delete {key} in etcd"
        ))
    })?;
    Ok(Some((rec, kv.mod_revision())))
}

/// Puts `rec` under `lease` if its key is absent or holds this host's record; never over
/// another host's.
pub(crate) async fn put_mine(
    sh: &Shared,
    client: &mut Client,
    rec: &EndpointRecord,
    lease: i64,
) -> Result<Owned, Error> {
    let key = sh.keys.endpoint(&rec.network, rec.ip);
    let value = sh.encode(rec)?;
    let put = || {
        TxnOp::put(
            key.as_str(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )
    };
    for _ in 0..RACE_RETRIES {
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([put()])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = client.txn(txn).await.map_err(|e| sh.unavailable(e))?;
        if resp.succeeded() {
            return Ok(Owned::Stored);
        }
        let Some(kv) = txn_get(&resp) else {
            continue; // deleted meanwhile: try to create it again
        };
        match serde_json::from_slice::<EndpointRecord>(kv.value()) {
            Ok(other) if other.host != sh.cfg.host => return Ok(Owned::Other(other.host)),
            // This host's (or garbage): overwrite it unless it changed meanwhile.
            _ => {}
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([put()]);
        if client
            .txn(txn)
            .await
            .map_err(|e| sh.unavailable(e))?
            .succeeded()
        {
            return Ok(Owned::Stored);
        }
    }
    Err(Error::Conflict(key))
}

pub(crate) async fn create_network(
    sh: &Shared,
    mut rec: NetworkRecord,
) -> Result<NetworkRecord, Error> {
    if rec.name.is_empty() || rec.name.contains('/') {
        return Err(Error::Invalid(format!(
            "network name {:?} is not usable: give a non-empty name without '/'",
            rec.name
        )));
    }
    let net = keys::parse_subnet(&rec.subnet, rec.gateway)?;
    rec.subnet = net.to_string();
    let mut client = sh.client()?;
    let net_key = sh.keys.network(&rec.name);
    for _ in 0..VNI_TRIES {
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let used: BTreeSet<u32> = client
            .get(sh.keys.vnis(), Some(opts))
            .await
            .map_err(|e| sh.unavailable(e))?
            .kvs()
            .iter()
            .filter_map(|kv| keys::vni_of_key(kv.key()))
            .collect();
        rec.vni = keys::lowest_free_vni(&used).ok_or(Error::VniExhausted)?;
        let vni_key = sh.keys.vni(rec.vni);
        let txn = Txn::new()
            .when([
                Compare::create_revision(net_key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(vni_key.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(net_key.as_str(), sh.encode(&rec)?, None),
                TxnOp::put(vni_key.as_str(), rec.name.as_bytes(), None),
            ])
            .or_else([TxnOp::get(net_key.as_str(), None)]);
        let resp = client.txn(txn).await.map_err(|e| sh.unavailable(e))?;
        if resp.succeeded() {
            return Ok(rec);
        }
        if txn_get(&resp).is_some() {
            return Err(Error::NetworkExists(rec.name));
        }
        // Another host took the VNI meanwhile: read the VNIs again.
    }
    Err(Error::Conflict(net_key))
}

pub(crate) async fn delete_network(sh: &Shared, name: &str) -> Result<(), Error> {
    let mut client = sh.client()?;
    let net_key = sh.keys.network(name);
    let ep_prefix = sh.keys.endpoints(name);
    for _ in 0..RACE_RETRIES {
        let resp = client
            .get(net_key.as_str(), None)
            .await
            .map_err(|e| sh.unavailable(e))?;
        let Some(kv) = resp.kvs().first() else {
            return Err(Error::NoSuchNetwork(name.to_string()));
        };
        let vni = serde_json::from_slice::<NetworkRecord>(kv.value())
            .ok()
            .map(|r| r.vni);
        let count = client
            .get(
                ep_prefix.as_str(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .map_err(|e| sh.unavailable(e))?
            .count();
        if count > 0 {
            return Err(Error::InUse {
                network: name.to_string(),
                endpoints: usize::try_from(count).unwrap_or(usize::MAX),
            });
        }
        let mut ops = vec![TxnOp::delete(net_key.as_str(), None)];
        match vni {
            Some(vni) => ops.push(TxnOp::delete(sh.keys.vni(vni), None)),
            // An unreadable record: free whichever VNI names this network.
            None => {
                let opts = GetOptions::new().with_prefix();
                let vnis = client
                    .get(sh.keys.vnis(), Some(opts))
                    .await
                    .map_err(|e| sh.unavailable(e))?;
                for kv in vnis.kvs().iter().filter(|kv| kv.value() == name.as_bytes()) {
                    ops.push(TxnOp::delete(kv.key(), None));
                }
            }
        }
        // No endpoint may appear between the count and the delete: compare the whole range.
        let txn = Txn::new()
            .when([
                Compare::mod_revision(net_key.as_str(), CompareOp::Equal, kv.mod_revision()),
                Compare::version(ep_prefix.as_str(), CompareOp::Equal, 0).with_prefix(),
            ])
            .and_then(ops);
        if client
            .txn(txn)
            .await
            .map_err(|e| sh.unavailable(e))?
            .succeeded()
        {
            return Ok(());
        }
    }
    Err(Error::Conflict(net_key))
}

/// Tries to create the endpoint key for `rec` under `lease`; false if it exists.
async fn create_endpoint(
    sh: &Shared,
    client: &mut Client,
    rec: &EndpointRecord,
    lease: i64,
) -> Result<bool, Error> {
    let key = sh.keys.endpoint(&rec.network, rec.ip);
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            sh.encode(rec)?,
            Some(PutOptions::new().with_lease(lease)),
        )]);
    Ok(client
        .txn(txn)
        .await
        .map_err(|e| sh.unavailable(e))?
        .succeeded())
}

pub(crate) async fn allocate(
    sh: &Shared,
    network: &str,
    name: &str,
    mac: Option<&str>,
    requested: Option<Ipv4Addr>,
) -> Result<Ipv4Addr, Error> {
    let mut client = sh.client()?;
    let Some((net_rec, _)) = self::network(sh, &mut client, network).await? else {
        return Err(Error::NoSuchNetwork(network.to_string()));
    };
    let net = keys::parse_subnet(&net_rec.subnet, net_rec.gateway)?;
    let lease = sh.lease()?;
    let record = |ip: Ipv4Addr| EndpointRecord {
        network: network.to_string(),
        ip,
        mac: mac.map_or_else(|| packet::MacAddr::docker(ip).to_string(), str::to_string),
        name: name.to_string(),
        host: sh.cfg.host.clone(),
        vtep: sh.cfg.vtep,
    };
    let chosen = if let Some(ip) = requested {
        keys::check_requested(net, net_rec.gateway, ip)?;
        let rec = record(ip);
        if !create_endpoint(sh, &mut client, &rec, lease).await? {
            return Err(Error::AddressInUse(ip));
        }
        rec
    } else {
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let mut used: BTreeSet<Ipv4Addr> = client
            .get(sh.keys.endpoints(network), Some(opts))
            .await
            .map_err(|e| sh.unavailable(e))?
            .kvs()
            .iter()
            .filter_map(|kv| keys::ip_of_key(kv.key()))
            .collect();
        let mut found = None;
        for _ in 0..ALLOC_TRIES {
            let Some(ip) = keys::candidates(net, net_rec.gateway, &used).next() else {
                return Err(Error::Exhausted(network.to_string()));
            };
            let rec = record(ip);
            if create_endpoint(sh, &mut client, &rec, lease).await? {
                found = Some(rec);
                break;
            }
            used.insert(ip); // lost the race for it: the next one
        }
        found.ok_or_else(|| Error::Conflict(sh.keys.endpoints(network)))?
    };
    let ip = chosen.ip;
    lock(&sh.mine).insert((network.to_string(), ip), chosen);
    Ok(ip)
}

pub(crate) async fn release(sh: &Shared, network: &str, ip: Ipv4Addr) -> Result<(), Error> {
    let mut client = sh.client()?;
    let key = sh.keys.endpoint(network, ip);
    for _ in 0..RACE_RETRIES {
        let resp = client
            .get(key.as_str(), None)
            .await
            .map_err(|e| sh.unavailable(e))?;
        let Some(kv) = resp.kvs().first() else {
            break;
        };
        match serde_json::from_slice::<EndpointRecord>(kv.value()) {
            Ok(rec) if rec.host == sh.cfg.host => {}
            Ok(rec) => {
                tracing::warn!(
                    "cluster store: not releasing {ip} on {network}: host {} holds it now",
                    rec.host
                );
                break;
            }
            Err(e) => {
                tracing::warn!(
                    "cluster store: not releasing {ip} on {network}: unreadable record ({e})"
                );
                break;
            }
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        if client
            .txn(txn)
            .await
            .map_err(|e| sh.unavailable(e))?
            .succeeded()
        {
            break;
        }
    }
    lock(&sh.mine).remove(&(network.to_string(), ip));
    Ok(())
}

pub(crate) async fn claim(
    sh: &Shared,
    network: &str,
    name: &str,
    mac: &str,
    ip: Ipv4Addr,
) -> Result<(), Error> {
    let mut client = sh.client()?;
    if self::network(sh, &mut client, network).await?.is_none() {
        return Err(Error::NoSuchNetwork(network.to_string()));
    }
    let lease = sh.lease()?;
    let rec = EndpointRecord {
        network: network.to_string(),
        ip,
        mac: mac.to_string(),
        name: name.to_string(),
        host: sh.cfg.host.clone(),
        vtep: sh.cfg.vtep,
    };
    match put_mine(sh, &mut client, &rec, lease).await? {
        Owned::Stored => {
            lock(&sh.mine).insert((network.to_string(), ip), rec);
            Ok(())
        }
        Owned::Other(_) => Err(Error::AddressInUse(ip)),
    }
}

/// Reads the whole prefix into a view.
pub(crate) async fn read_all(
    sh: &Shared,
    client: &mut Client,
) -> Result<(State, i64), etcd_client::Error> {
    let resp = client
        .get(sh.keys.all(), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut state = State::default();
    for kv in resp.kvs() {
        state.put(&sh.keys, kv.key(), kv.value());
    }
    Ok((state, revision))
}

pub(crate) async fn view(sh: &Shared) -> Result<ClusterView, Error> {
    let mut client = sh.client()?;
    let (state, revision) = read_all(sh, &mut client)
        .await
        .map_err(|e| sh.unavailable(e))?;
    Ok(state.view(revision))
}
