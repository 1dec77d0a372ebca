//! `cargo xtask plugins`: build the provider components and put them where the server and the
//! tests find them.

use crate::{Result, workspace};
use std::fs;
use std::path::{Path, PathBuf};

/// The Rust target providers are built for; its `.wasm` output is already a component.
const WASM_TARGET: &str = "wasm32-wasip2";
/// Cargo profile for components (size-optimised, LTO, panic=abort; see the root Cargo.toml).
const PROFILE: &str = "plugin";
/// First 8 bytes of a WebAssembly *component* (magic, then version 0x0d layer 1); a core module
/// has layer 0 and is not loadable as a provider.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Where a component goes.
#[derive(Clone, Copy, PartialEq)]
pub enum Destination {
    /// `target/providers/`: the built-in providers the server loads at start-up.
    Providers,
    /// `target/fixtures/`: components only the tests load.
    Fixtures,
}

impl Destination {
    fn dir_name(self) -> &'static str {
        match self {
            Destination::Providers => "providers",
            Destination::Fixtures => "fixtures",
        }
    }
}

/// A component crate of the workspace.
pub struct Component {
    /// Cargo package name.
    pub package: &'static str,
    pub destination: Destination,
}

/// Every component the workspace builds.
pub const COMPONENTS: &[Component] = &[
    Component {
        package: "bnr-dummy",
        destination: Destination::Providers,
    },
    Component {
        package: "bnr-veeam",
        destination: Destination::Providers,
    },
    Component {
        package: "bnr-networker",
        destination: Destination::Providers,
    },
    Component {
        package: "bnr-fixture-hostile",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-scripted",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-wrong-world",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-future-version",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-thief",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-impostor",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-slow-describe",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-exec-probe",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-wit-1-0",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-dummy-next",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-dummy-next-plain",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-dummy-next-adopter",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-dummy-hosts",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-broken-contract",
        destination: Destination::Fixtures,
    },
    Component {
        package: "bnr-fixture-wit-1-1",
        destination: Destination::Fixtures,
    },
];

/// Components built in a cargo invocation of their own: the vendor template (`sdk/template`,
/// checked against its example appliance) turns on SDK features (`json`) that, unified into
/// the build above, would change the built-in providers' bytes away from those the `bnr`
/// binary embeds and trusts by sha256.
pub const SEPARATE_COMPONENTS: &[Component] = &[Component {
    package: "acme-bnr-provider",
    destination: Destination::Fixtures,
}];

/// A built and installed component.
pub struct Built {
    pub package: &'static str,
    pub path: PathBuf,
    pub size: u64,
}

/// `cargo xtask plugins` (no arguments).
pub fn run(args: &[String]) -> Result<()> {
    if let Some(extra) = args.first() {
        return Err(format!("`plugins` takes no arguments (got `{extra}`)").into());
    }
    let built = build_all()?;
    let target = workspace::target_dir()?;
    println!("components ({WASM_TARGET}, profile `{PROFILE}`):");
    for component in &built {
        println!(
            "  {:<28} {:>9} B  {}",
            component.package,
            component.size,
            component.path.display()
        );
    }
    println!(
        "built-in providers: {}\ntest fixtures:      {}",
        target.join(Destination::Providers.dir_name()).display(),
        target.join(Destination::Fixtures.dir_name()).display()
    );
    Ok(())
}

/// Build every component in one cargo invocation and copy each into its destination directory.
/// Other tasks (tests, CI) call this before they need the components.
pub fn build_all() -> Result<Vec<Built>> {
    for group in [COMPONENTS, SEPARATE_COMPONENTS] {
        let mut cargo = workspace::cargo()?;
        cargo.args(["build", "--target", WASM_TARGET, "--profile", PROFILE]);
        for component in group {
            cargo.args(["-p", component.package]);
        }
        workspace::run(cargo)?;
    }

    let target = workspace::target_dir()?;
    let output_dir = target.join(WASM_TARGET).join(PROFILE);
    COMPONENTS
        .iter()
        .chain(SEPARATE_COMPONENTS)
        .map(|component| {
            let file_name = format!("{}.wasm", component.package.replace('-', "_"));
            let source = output_dir.join(&file_name);
            check_component(&source)?;
            let dir = target.join(component.destination.dir_name());
            fs::create_dir_all(&dir)
                .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
            let path = dir.join(&file_name);
            install(&source, &path)?;
            let size = fs::metadata(&path)?.len();
            Ok(Built {
                package: component.package,
                path,
                size,
            })
        })
        .collect()
}

fn check_component(path: &Path) -> Result<()> {
    let bytes =
        fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if bytes.get(..COMPONENT_HEADER.len()) != Some(&COMPONENT_HEADER[..]) {
        return Err(format!("{} is not a WebAssembly component", path.display()).into());
    }
    Ok(())
}

/// Copy via a temporary file and rename, so a server loading the directory never sees a
/// half-written component.
fn install(source: &Path, destination: &Path) -> Result<()> {
    let temporary = destination.with_extension("wasm.tmp");
    fs::copy(source, &temporary).map_err(|error| {
        format!(
            "cannot copy {} to {}: {error}",
            source.display(),
            temporary.display()
        )
    })?;
    fs::rename(&temporary, destination)
        .map_err(|error| format!("cannot move {} into place: {error}", destination.display()))?;
    Ok(())
}
