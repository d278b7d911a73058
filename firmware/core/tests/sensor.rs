//! The auto-ranging light sensor against the I²C transactions a VEML6030 expects.

use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
use parklight_core::sensor::{AutoRangingVeml, LightSensor, Sample};
use veml6030::{SlaveAddr, Veml6030};

// Our own copy of the datasheet's registers and bits, so a wrong constant fails here.
const ADDRESS: u8 = 0x10;
const ALS_CONF: u8 = 0x00;
const ALS: u8 = 0x04;
const SHUTDOWN: u16 = 0x0001;
const GAIN_1_8: u16 = 0b10 << 11;
const GAIN_1: u16 = 0b00 << 11;
const GAIN_2: u16 = 0b01 << 11;
const GAIN_1_4: u16 = 0b11 << 11;
const IT_25: u16 = 0b1100 << 6;
const IT_100: u16 = 0b0000 << 6;
const IT_200: u16 = 0b0001 << 6;
const IT_400: u16 = 0b0010 << 6;
const IT_800: u16 = 0b0011 << 6;

fn write_conf(bits: u16) -> Transaction {
    Transaction::write(ADDRESS, vec![ALS_CONF, bits as u8, (bits >> 8) as u8])
}

fn read_als(raw: u16) -> Transaction {
    Transaction::write_read(ADDRESS, vec![ALS], vec![raw as u8, (raw >> 8) as u8])
}

/// The writes that move the sensor to a gain and integration time (gain first).
fn set_range(previous: u16, gain: u16, it: u16) -> [Transaction; 2] {
    let with_gain = (previous & !(0b11 << 11)) | gain;
    [
        write_conf(with_gain),
        write_conf((with_gain & !(0b1111 << 6)) | it),
    ]
}

#[test]
fn ranges_up_in_the_dark_and_down_in_the_sun() {
    let mut expected = Vec::new();
    // First read: least sensitive range, then enable (clear shutdown).
    expected.extend(set_range(SHUTDOWN, GAIN_1_8, IT_25));
    expected.push(write_conf(GAIN_1_8 | IT_25));
    // Night: each reading is too small, so it steps up through every range.
    let mut conf = GAIN_1_8 | IT_25;
    for (gain, it) in [
        (GAIN_1_8, IT_100),
        (GAIN_1_4, IT_200),
        (GAIN_1, IT_400),
        (GAIN_2, IT_800),
    ] {
        expected.push(read_als(3));
        expected.extend(set_range(conf, gain, it));
        conf = gain | it;
    }
    // The first sample after a change is skipped; then 0.02 lx is measured.
    expected.push(read_als(5));
    expected.push(read_als(5));
    // Sunrise: saturating counts step it back down.
    expected.push(read_als(65_000));
    expected.extend(set_range(conf, GAIN_1, IT_400));

    let mut sensor =
        AutoRangingVeml::new(Veml6030::new(Mock::new(&expected), SlaveAddr::default()));
    assert_eq!(sensor.read_lux().unwrap(), Sample::Ranging, "configuring");
    for _ in 0..4 {
        assert_eq!(sensor.read_lux().unwrap(), Sample::Ranging, "ranging up");
    }
    assert_eq!(
        sensor.read_lux().unwrap(),
        Sample::Ranging,
        "skipped after the change"
    );
    let Sample::Lux(night) = sensor.read_lux().unwrap() else {
        panic!("a reading after ranging")
    };
    assert!((night - 5.0 * 0.0036).abs() < 1e-6, "{night}");
    assert_eq!(sensor.read_lux().unwrap(), Sample::Ranging, "ranging down");
    sensor.destroy().destroy().done();
}

#[test]
fn bright_sun_reads_with_the_high_lux_correction() {
    let mut expected = Vec::new();
    expected.extend(set_range(SHUTDOWN, GAIN_1_8, IT_25));
    expected.push(write_conf(GAIN_1_8 | IT_25));
    expected.push(read_als(10_000)); // skipped: first sample
    expected.push(read_als(10_000)); // full sun
    expected.push(read_als(60_000)); // beyond the rating, in the least sensitive range
    let mut sensor =
        AutoRangingVeml::new(Veml6030::new(Mock::new(&expected), SlaveAddr::default()));
    assert_eq!(sensor.read_lux().unwrap(), Sample::Ranging);
    assert_eq!(sensor.read_lux().unwrap(), Sample::Ranging);
    let Sample::Lux(sun) = sensor.read_lux().unwrap() else {
        panic!("a reading in full sun")
    };
    let linear = 10_000.0 * 1.8432;
    assert!(
        sun > 2.0 * linear && sun < 120_000.0,
        "corrected above the linear {linear}: {sun}"
    );
    assert_eq!(
        sensor.read_lux().unwrap(),
        Sample::Lux(parklight_core::sensor::MAX_RATED_LUX)
    );
    sensor.destroy().destroy().done();
}

#[test]
fn a_bus_error_is_an_error_not_a_reading() {
    use embedded_hal::i2c::ErrorKind;
    let mut expected = Vec::new();
    expected.extend(set_range(SHUTDOWN, GAIN_1_8, IT_25));
    expected.push(write_conf(GAIN_1_8 | IT_25));
    expected.push(read_als(0).with_error(ErrorKind::Other));
    let mut sensor =
        AutoRangingVeml::new(Veml6030::new(Mock::new(&expected), SlaveAddr::default()));
    assert_eq!(sensor.read_lux().unwrap(), Sample::Ranging);
    assert!(sensor.read_lux().is_err());
    sensor.destroy().destroy().done();
}
