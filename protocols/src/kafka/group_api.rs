//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups, DescribeGroups, DeleteGroups:
//! translation between the wire messages and the [`Coordinator`](super::groups::Coordinator).

use std::time::Instant;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;

use super::broker::{code, coordinator_code, sb, KafkaBroker};
use super::groups::{JoinRequest, Pending};
use crate::node::Node;

impl<N: Node> KafkaBroker<N> {
    pub(crate) async fn join_group(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        let jr = JoinRequest {
            group: req.group_id.0.as_str().to_string(),
            member_id: req.member_id.as_str().to_string(),
            instance_id: req
                .group_instance_id
                .as_ref()
                .map(|s| s.as_str().to_string()),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: if version >= 1 {
                req.rebalance_timeout_ms
            } else {
                req.session_timeout_ms
            },
            protocol_type: req.protocol_type.as_str().to_string(),
            protocols: req
                .protocols
                .iter()
                .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
                .collect(),
            require_known_member_id: version >= 4,
        };
        let member_id = jr.member_id.clone();
        let mut r = match self.groups.join(jr, Instant::now()) {
            Pending::Now(r) => r,
            Pending::Wait(rx) => rx.await.unwrap_or_else(|_| super::groups::JoinResult {
                error: code::UNKNOWN_MEMBER_ID,
                generation: -1,
                member_id: member_id.clone(),
                ..Default::default()
            }),
        };
        // The new generation is stored before any member learns it (if storing fails, the
        // group rebalances again: see Coordinator::store_failed).
        if let Err(e) = self.persist_groups().await {
            if r.error == code::NONE {
                r = super::groups::JoinResult {
                    error: coordinator_code(&e, false),
                    generation: -1,
                    member_id: r.member_id,
                    ..Default::default()
                };
            }
        }
        JoinGroupResponse::default()
            .with_error_code(r.error)
            .with_generation_id(r.generation)
            .with_protocol_type(r.protocol_type.map(|s| sb(&s)))
            .with_protocol_name(r.protocol.map(|s| sb(&s)))
            .with_leader(sb(&r.leader))
            .with_member_id(sb(&r.member_id))
            .with_members(
                r.members
                    .into_iter()
                    .map(|(id, iid, md)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(sb(&id))
                            .with_group_instance_id(iid.map(|s| sb(&s)))
                            .with_metadata(md)
                    })
                    .collect(),
            )
    }

    pub(crate) async fn sync_group(&self, req: SyncGroupRequest) -> SyncGroupResponse {
        let assignments = req
            .assignments
            .iter()
            .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
            .collect();
        let pending = self.groups.sync(
            req.group_id.0.as_str(),
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
            assignments,
            Instant::now(),
        );
        let mut r = match pending {
            Pending::Now(r) => r,
            Pending::Wait(rx) => rx.await.unwrap_or_else(|_| super::groups::SyncResult {
                error: code::REBALANCE_IN_PROGRESS,
                ..Default::default()
            }),
        };
        // The assignment is stored before the member acts on it (if storing fails, the
        // group rebalances again: see Coordinator::store_failed).
        if let Err(e) = self.persist_groups().await {
            if r.error == code::NONE {
                r = super::groups::SyncResult {
                    error: coordinator_code(&e, false),
                    ..Default::default()
                };
            }
        }
        SyncGroupResponse::default()
            .with_error_code(r.error)
            .with_protocol_type(r.protocol_type.map(|s| sb(&s)))
            .with_protocol_name(r.protocol.map(|s| sb(&s)))
            .with_assignment(r.assignment)
    }

    pub(crate) fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let e = self.groups.heartbeat(
            req.group_id.0.as_str(),
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_ref().map(|s| s.as_str()),
            Instant::now(),
        );
        HeartbeatResponse::default().with_error_code(e)
    }

    pub(crate) async fn leave_group(
        &self,
        req: LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let members: Vec<(String, Option<String>)> = if version >= 3 {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.as_str().to_string(),
                        m.group_instance_id.as_ref().map(|s| s.as_str().to_string()),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.as_str().to_string(), None)]
        };
        let errors = self
            .groups
            .leave(req.group_id.0.as_str(), &members, Instant::now());
        // Best effort: a member that left is gone from memory either way, and the next
        // group change (or the timer) writes the group again.
        let _ = self.persist_groups().await;
        if version >= 3 {
            LeaveGroupResponse::default().with_members(
                members
                    .into_iter()
                    .zip(errors)
                    .map(|((mid, iid), e)| {
                        MemberResponse::default()
                            .with_member_id(sb(&mid))
                            .with_group_instance_id(iid.map(|s| sb(&s)))
                            .with_error_code(e)
                    })
                    .collect(),
            )
        } else {
            LeaveGroupResponse::default()
                .with_error_code(errors.first().copied().unwrap_or(code::NONE))
        }
    }

    /// Groups known to the coordinator plus groups that only have committed offsets (Empty).
    pub(crate) fn list_groups(&self, req: ListGroupsRequest) -> ListGroupsResponse {
        let mut all: std::collections::BTreeMap<String, (String, &'static str)> = self
            .groups
            .list()
            .into_iter()
            .map(|(g, t, s)| (g, (t, s)))
            .collect();
        for g in self.committed_groups() {
            all.entry(g).or_insert((String::from("consumer"), "Empty"));
        }
        let filter: Vec<String> = req
            .states_filter
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        ListGroupsResponse::default().with_groups(
            all.into_iter()
                .filter(|(_, (_, s))| {
                    filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(s))
                })
                .map(|(g, (t, s))| {
                    ListedGroup::default()
                        .with_group_id(GroupId(sb(&g)))
                        .with_protocol_type(sb(&t))
                        .with_group_state(sb(s))
                        .with_group_type(sb("classic"))
                })
                .collect(),
        )
    }

    pub(crate) fn describe_groups(&self, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let groups = req
            .groups
            .into_iter()
            .map(|gid| {
                let d = DescribedGroup::default().with_group_id(gid.clone());
                match self.groups.describe(gid.0.as_str()) {
                    Some(desc) => d
                        .with_group_state(sb(desc.state))
                        .with_protocol_type(sb(&desc.protocol_type))
                        .with_protocol_data(sb(&desc.protocol))
                        .with_members(
                            desc.members
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_id(sb(&m.member_id))
                                        .with_group_instance_id(m.instance_id.map(|s| sb(&s)))
                                        .with_client_id(sb(&m.client_id))
                                        .with_client_host(sb(&m.client_host))
                                        .with_member_metadata(m.metadata)
                                        .with_member_assignment(m.assignment)
                                })
                                .collect(),
                        ),
                    None if self.committed_groups().iter().any(|g| g == gid.0.as_str()) => d
                        .with_group_state(sb("Empty"))
                        .with_protocol_type(sb("consumer")),
                    None => d.with_group_state(sb("Dead")),
                }
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    pub(crate) async fn delete_groups(&self, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut results = Vec::with_capacity(req.groups_names.len());
        for gid in req.groups_names {
            let name = gid.0.as_str().to_string();
            let in_memory = self.groups.delete(&name);
            // A deletion is answered NONE only once it is stored: the group's tombstone and
            // every committed offset's (a failed one is retried by the next persist / the
            // client's retry of DeleteGroups).
            let stored = self.persist_groups().await;
            let offsets = if in_memory == code::NON_EMPTY_GROUP {
                Ok(false)
            } else {
                self.delete_committed(&name).await
            };
            let e = match (in_memory, stored, offsets) {
                (code::NON_EMPTY_GROUP, _, _) => code::NON_EMPTY_GROUP,
                (_, Err(e), _) | (_, _, Err(e)) => coordinator_code(&e, false),
                (code::GROUP_ID_NOT_FOUND, Ok(()), Ok(true)) => code::NONE,
                (other, Ok(()), Ok(_)) => other,
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(gid)
                    .with_error_code(e),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }
}
