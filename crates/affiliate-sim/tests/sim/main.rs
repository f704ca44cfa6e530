//! The simulator through its real HTTP interface.

mod clock;
mod dataset;
mod orders;
mod postbacks;
mod refunds;
mod settlement;
mod support;
