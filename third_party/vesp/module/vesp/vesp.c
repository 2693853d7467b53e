// vesp: the virtual ESP32's CPU model, the counters' Python face (see third_party/vesp/README.md).
//
//   vesp.take() -> (ops, allocs, alloc_bytes, bytes, wait_us) since the last take()
//   vesp.enable(on) -> the previous state: 0 pauses every counter (the simulated hardware's own
//                      Python code is not the firmware's), 1 counts again
//   vesp.wait_us(n)  time the chip spends that does not scale with its clock (an ADC conversion)
//
// take() returns differences, so each is a small int for any one task step and nothing is
// allocated but the tuple (made with counting paused). Everything here is deterministic: the
// same program and inputs give the same counts on any host.
#include "py/runtime.h"
#include "py/vesp.h"

static uint64_t vesp_wait_us;

static mp_obj_t vesp_take(void) {
    uint64_t v[5] = {mp_vesp_ops, mp_vesp_allocs, mp_vesp_alloc_bytes, mp_vesp_bytes, vesp_wait_us};
    uint32_t on = mp_vesp_on;
    mp_vesp_on = 0;
    mp_obj_t items[5];
    for (int i = 0; i < 5; i++) {
        items[i] = mp_obj_new_int_from_ull(v[i]);
    }
    mp_obj_t t = mp_obj_new_tuple(5, items);
    mp_vesp_ops = mp_vesp_allocs = mp_vesp_alloc_bytes = mp_vesp_bytes = vesp_wait_us = 0;
    mp_vesp_on = on;
    return t;
}
static MP_DEFINE_CONST_FUN_OBJ_0(vesp_take_obj, vesp_take);

static mp_obj_t vesp_enable(mp_obj_t on) {
    mp_int_t was = mp_vesp_on;
    mp_vesp_on = mp_obj_is_true(on) ? 1 : 0;
    return MP_OBJ_NEW_SMALL_INT(was);
}
static MP_DEFINE_CONST_FUN_OBJ_1(vesp_enable_obj, vesp_enable);

static mp_obj_t vesp_wait(mp_obj_t us) {
    if (mp_vesp_on) {
        vesp_wait_us += mp_obj_get_int(us);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(vesp_wait_obj, vesp_wait);

static const mp_rom_map_elem_t vesp_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_vesp) },
    { MP_ROM_QSTR(MP_QSTR_take), MP_ROM_PTR(&vesp_take_obj) },
    { MP_ROM_QSTR(MP_QSTR_enable), MP_ROM_PTR(&vesp_enable_obj) },
    { MP_ROM_QSTR(MP_QSTR_wait_us), MP_ROM_PTR(&vesp_wait_obj) },
};
static MP_DEFINE_CONST_DICT(vesp_globals, vesp_globals_table);

const mp_obj_module_t vesp_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&vesp_globals,
};

MP_REGISTER_MODULE(MP_QSTR_vesp, vesp_module);
