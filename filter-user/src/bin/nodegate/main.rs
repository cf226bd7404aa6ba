fn main() {
    println!("nodegate");
}
