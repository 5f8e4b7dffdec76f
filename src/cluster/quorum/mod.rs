//! placeholder: the quorum core is being written
