# The virtual ESP32's frozen modules (tools/vm.py): the device image (../manifest.py), then what
# stands in for the board around it, frozen too so that its bytecode takes no heap either.
include("../manifest.py")

# boot.py and main.py run from the board's filesystem; frozen here so the harness can run them
# again after every simulated reset without compiling them into the heap.
module("boot.py", base_path="..")
module("main.py", base_path="..")

# The fake hardware modules (they shadow the unix port's own `machine`).
module("machine.py", base_path="fakes")
module("esp32.py", base_path="fakes")
module("network.py", base_path="fakes")

# The simulated world and the harness that runs the firmware in it.
package("world")
module("simrun.py")
module("lfs.py")
module("control.py")
module("boardsim.py")
module("bench_reaction.py")
module("bench_meter.py")
module("bench_ocpp.py")
module("alloc_probe.py")
module("modram.py")
module("cpumodel.py")
module("pathx.py")
module("vclock.py")
