//! Internal DNS responder (being written).
