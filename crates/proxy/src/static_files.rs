//! Static site serving (being written).
