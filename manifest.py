# MicroPython manifest: freezes the charger firmware into a custom ESP32 firmware image.
#
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/this/repo/manifest.py
#
# Frozen modules run from flash: their bytecode takes no RAM to load, which leaves the heap to the
# firmware's data. Paths below are relative to this file.
#
# - The port's own manifest comes first, so the image keeps everything a stock build freezes
#   (asyncio, network helpers, ...).
# - boot.py and main.py are NOT frozen: the ESP32 port runs them only from the filesystem. Copy
#   them onto the board (mpremote cp boot.py main.py :), with the board profile (board.json) and
#   the settings; drivers/boards/*.json are data for the deploy tool, not modules.
# - Do not also copy firmware/ or drivers/ onto the board's filesystem: '' (the filesystem root)
#   comes before '.frozen' on sys.path, so a filesystem copy would shadow the frozen one, stale or
#   not. (An application slot in /app, see docs/firmware-update.md, shadows it on purpose.)

include("$(PORT_DIR)/boards/manifest.py")

package("firmware")
package("drivers")
