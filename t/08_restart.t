# Restarts are non-events: after a graceful restart with the responder
# answering "unauthorized" or hanging, and after a full stop/start with the
# responder down, the first handshake is stapled with the last good response,
# at normal speed. A certificate replaced at a reload gets its own response
# and the old one's stored file goes away.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;

plan tests => 14;

my $good = RSTest::wait_for(sub { my $h = RSTest::handshake('restart'); $h->{stapled} && $h }, 5);
ok($good);

sub same_staple_fast {
    my $what = shift;
    my $h = RSTest::handshake('restart');
    my $ok = $h->{stapled} && $h->{this_update} == $good->{this_update} && $h->{elapsed} < 0.5;
    print "# $what: stapled=$h->{stapled} elapsed=$h->{elapsed}\n";
    return $ok;
}

RSTest::set_mode('restart', 'unauthorized');
RSTest::graceful();
ok(same_staple_fast('graceful, unauthorized'));
ok(RSTest::curl_cert_status('restart') == 0);

RSTest::set_mode('restart', 'hang');
RSTest::graceful();
ok(same_staple_fast('graceful, hang'));

RSTest::set_mode('restart', 'http500');
my $server = Apache::Test::config()->server;
$server->stop;
$server->start;
ok(same_staple_fast('stop/start, responder down'));
ok(RSTest::error_log() =~ /RS0301: restored the good response for CN=restart\.rs\.test,/);
RSTest::set_mode('restart', 'good');

# the certificate of vhost "swap" is replaced at a reload
my $conf = Apache::Test::vars()->{t_conf} . '/rs_vhosts.conf.inc';
my $a = RSTest::wait_for(sub { my $h = RSTest::handshake('swap'); $h->{stapled} && $h }, 5);
ok($a && $a->{serial} eq RSTest::serial('swap-a'));
my $file_a = RSTest::store_dir() . '/' . RSTest::cert_id('swap-a') . '.der';
ok(-f $file_a);
my $text = RSTest::slurp($conf);
(my $swapped = $text) =~ s/swap-a\./swap-b./g;
open my $fh, '>', $conf or die $!;
print $fh $swapped;
close $fh;
RSTest::graceful();
my $b = RSTest::wait_for(sub {
    my $h = RSTest::handshake('swap');
    $h->{stapled} && $h->{serial} eq RSTest::serial('swap-b') && $h }, 8);
ok($b);
ok(!-f $file_a);
ok(-f RSTest::store_dir() . '/' . RSTest::cert_id('swap-b') . '.der');
ok(RSTest::error_log() =~ /RS0304: removed the stored response of certificate ${\ RSTest::cert_id('swap-a')}/);
open $fh, '>', $conf or die $!;
print $fh $text;
close $fh;
RSTest::graceful();
my $back = RSTest::wait_for(sub {
    my $h = RSTest::handshake('swap');
    $h->{stapled} && $h->{serial} eq RSTest::serial('swap-a') && $h }, 8);
ok($back);
ok(RSTest::handshake('good')->{stapled});
