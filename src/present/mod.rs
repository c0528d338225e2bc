//! Results as people see them: colour maps, images of maps, grids and overlays, half-block
//! cells for the terminal and PNG / `.npy` files ([`render`]); a method's result as a
//! captioned picture ([`figures`]); the layer table ([`summary`]) and the architecture
//! diagram ([`diagram`]). Plain data in, pixels or text out: the explorer and the commands
//! show the same pixels from the same numbers.

pub mod diagram;
pub mod figures;
pub mod render;
pub mod summary;
